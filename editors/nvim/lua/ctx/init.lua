-- ctx for Neovim: runs `ctx lsp` on the built-in LSP client and adds :CtxStatus.
--
--   require('ctx').setup{}                     -- attach to every file buffer
--   require('ctx').setup{ filetypes = {'c', 'lua'}, cmd = {'ctx', 'lsp'} }
--
-- Works on Neovim 0.7 (vim.lsp.start_client + buf_attach_client) and later (vim.lsp.start, which
-- reuses one client per root directory by itself).
local M = {}

local defaults = {
  cmd = { 'ctx', 'lsp' },     -- the server command; add '--socket', PATH before 'lsp' for another ctxd
  filetypes = nil,            -- nil: every buffer that holds a file
  root_markers = { '.git' },  -- the root is the nearest directory holding one of these, else the cwd
  notify = true,              -- show :CtxStatus results with vim.notify
  on_exit = nil,              -- function(code, signal, client_id), called when the server exits
}

M.config = vim.deepcopy(defaults)
M.last_status = nil  -- the last ctx.status result (a table), for statuslines and tests
M.last_error = nil   -- the last ctx.status error message

local client_ids = {} -- root_dir -> client id (0.7 path; vim.lsp.start keeps its own)

local function get_clients()
  if vim.lsp.get_clients then
    return vim.lsp.get_clients({ name = 'ctx' })
  end
  local out = {}
  for _, c in pairs(vim.lsp.get_active_clients()) do
    if c.name == 'ctx' then
      table.insert(out, c)
    end
  end
  return out
end

local function root_dir(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local dir = name ~= '' and vim.fn.fnamemodify(name, ':p:h') or vim.fn.getcwd()
  for _, marker in ipairs(M.config.root_markers) do
    local found = vim.fn.finddir(marker, dir .. ';')
    if found == '' then
      found = vim.fn.findfile(marker, dir .. ';')
    end
    if found ~= '' then
      return vim.fn.fnamemodify(found, ':p:h:h')
    end
  end
  return vim.fn.getcwd()
end

local function wanted(bufnr)
  if vim.api.nvim_buf_get_option(bufnr, 'buftype') ~= '' then
    return false
  end
  if vim.api.nvim_buf_get_name(bufnr) == '' then
    return false
  end
  local fts = M.config.filetypes
  if not fts then
    return true
  end
  local ft = vim.api.nvim_buf_get_option(bufnr, 'filetype')
  for _, f in ipairs(fts) do
    if f == ft then
      return true
    end
  end
  return false
end

--- Start (or reuse) the ctx client for a buffer and attach it. Returns the client id.
function M.start(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local root = root_dir(bufnr)
  local config = {
    name = 'ctx',
    cmd = M.config.cmd,
    root_dir = root,
    on_exit = function(code, signal, id)
      for r, cid in pairs(client_ids) do
        if cid == id then
          client_ids[r] = nil
        end
      end
      if M.config.on_exit then
        M.config.on_exit(code, signal, id)
      end
    end,
  }
  if vim.lsp.start then
    return vim.lsp.start(config, { bufnr = bufnr })
  end
  local id = client_ids[root]
  local client = id and vim.lsp.get_client_by_id(id)
  if not client or client.is_stopped() then
    id = vim.lsp.start_client(config)
    if not id then
      return nil
    end
    client_ids[root] = id
  end
  vim.lsp.buf_attach_client(bufnr, id)
  return id
end

local function describe(r)
  local d, l = r.daemon or {}, r.lsp or {}
  local docs = l.documents or {}
  return string.format('ctxd %s (protocol %s), pid %s, up %.1f s, %s client(s); %d open buffer(s) in ctx lsp',
    tostring(d.version), tostring(d.protocol), tostring(d.pid), (d.uptime_ms or 0) / 1000,
    tostring(d.connections), #docs)
end

--- Run the server's ctx.status command. callback(err, result) gets the result table; by default
--- the result is shown with vim.notify.
function M.status(callback)
  local bufnr = vim.api.nvim_get_current_buf()
  local client = get_clients()[1]
  if not client then
    local id = M.start(bufnr)
    client = id and vim.lsp.get_client_by_id(id)
  end
  if not client then
    M.last_error = 'ctx: the language server could not be started'
    vim.notify(M.last_error, vim.log.levels.ERROR)
    return
  end
  local params = { command = 'ctx.status', arguments = {} }
  local handler = function(err, result)
    if err then
      M.last_error = err.message or tostring(err)
      if M.config.notify then
        vim.notify('ctx status: ' .. M.last_error, vim.log.levels.ERROR)
      end
    else
      M.last_status = result
      M.last_error = nil
      if M.config.notify then
        vim.notify(describe(result), vim.log.levels.INFO)
      end
    end
    if callback then
      callback(err, result)
    end
  end
  -- 0.11 made clients objects (client:request); earlier versions take no self
  if vim.fn.has('nvim-0.11') == 1 then
    client:request('workspace/executeCommand', params, handler, bufnr)
  else
    client.request('workspace/executeCommand', params, handler, bufnr)
  end
end

M.describe = describe

function M.setup(opts)
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(defaults), opts or {})
  local group = vim.api.nvim_create_augroup('ctx_lsp', { clear = true })
  vim.api.nvim_create_autocmd({ 'BufReadPost', 'BufNewFile', 'FileType' }, {
    group = group,
    callback = function(args)
      if wanted(args.buf) then
        M.start(args.buf)
      end
    end,
  })
  vim.api.nvim_create_user_command('CtxStatus', function()
    M.status()
  end, { desc = 'Show the ctx daemon status (runs ctx.status on ctx lsp)' })
  -- buffers already open when setup runs
  for _, b in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(b) and wanted(b) then
      M.start(b)
    end
  end
end

return M
