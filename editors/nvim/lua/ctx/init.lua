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
  -- ctx lsp's initializationOptions: reviewOnSave (true), reviewDebounceMs (1500),
  -- openRepository (true), inlineCompletion = { maxTokens, timeoutMs, budget }
  init_options = nil,
  keymaps = false,            -- true: the default maps below; a table: your own lhs per action
  inline = false,             -- true: inline completion as virtual text while typing (insert mode)
  inline_delay_ms = 300,      -- quiet time before an automatic inline completion request
}

-- Opt-in default keymaps (keymaps = true). Override with keymaps = { ask = '<leader>a', ... };
-- an action set to false gets no map.
local default_keys = {
  ask = '<leader>ca',       -- :CtxAsk (prompts for the question)
  review = '<leader>cr',    -- :CtxReview
  fix = '<leader>cf',       -- :CtxFix on the line (visual: the selection)
  explain = '<leader>ce',   -- :CtxExplain on the line (visual: the selection)
  complete = '<M-]>',       -- insert mode: ask for an inline completion now
  accept = '<M-CR>',        -- insert mode: accept the inline completion shown
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
    init_options = M.config.init_options,
    workspace_folders = { { uri = vim.uri_from_fname(root), name = root } },
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

-- ---- the agent's commands ----

local function client_for(bufnr)
  local client = get_clients()[1]
  if not client then
    local id = M.start(bufnr)
    client = id and vim.lsp.get_client_by_id(id)
  end
  return client
end

local function request(client, method, params, handler, bufnr)
  if vim.fn.has('nvim-0.11') == 1 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

local function execute(command, arguments, callback)
  local bufnr = vim.api.nvim_get_current_buf()
  local client = client_for(bufnr)
  if not client then
    vim.notify('ctx: the language server could not be started', vim.log.levels.ERROR)
    return
  end
  request(client, 'workspace/executeCommand', { command = command, arguments = arguments }, function(err, result)
    if err and M.config.notify then
      vim.notify(command .. ': ' .. (err.message or tostring(err)), vim.log.levels.ERROR)
    end
    if callback then
      callback(err, result)
    end
  end, bufnr)
end

-- {uri, range} of lines line1..line2 (1-based, inclusive) of the current buffer, in UTF-16.
local function range_arg(line1, line2)
  local bufnr = vim.api.nvim_get_current_buf()
  local last = vim.api.nvim_buf_get_lines(bufnr, line2 - 1, line2, false)[1] or ''
  local arg = {
    uri = vim.uri_from_bufnr(bufnr),
    range = {
      start = { line = line1 - 1, character = 0 },
      ['end'] = { line = line2 - 1, character = vim.str_utfindex(last) },
    },
    diagnostics = {},
  }
  for _, d in ipairs(vim.diagnostic.get(bufnr)) do
    if d.lnum >= line1 - 1 and d.lnum <= line2 - 1 then
      table.insert(arg.diagnostics, d.message)
    end
  end
  return arg
end

-- Answers go to a scratch buffer in a split (and M.last_answer).
local function show_answer(title, text)
  M.last_answer = text
  if not M.config.notify then
    return
  end
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, vim.split('# ' .. title .. '\n\n' .. (text or ''), '\n'))
  vim.api.nvim_buf_set_option(buf, 'filetype', 'markdown')
  vim.cmd('botright split')
  vim.api.nvim_win_set_buf(0, buf)
end

--- Ask the agent about the repository (ctx.ask); with a range, about those lines.
function M.ask(question, line1, line2, callback)
  local arg = question
  if line1 then
    arg = range_arg(line1, line2)
    arg.question = question
  end
  execute('ctx.ask', { arg }, function(err, result)
    if not err and result then
      show_answer(question, result.answer)
    end
    M.last_result = result
    if callback then
      callback(err, result)
    end
  end)
end

--- Review the current file (ctx.review): the findings arrive as diagnostics.
function M.review(callback)
  execute('ctx.review', { { uri = vim.uri_from_bufnr(0) } }, function(err, result)
    M.last_result = result
    if callback then
      callback(err, result)
    end
  end)
end

--- Fix / refactor / write tests for lines line1..line2 (ctx.fix, ctx.refactor, ctx.writeTests): the
--- server sends the change as workspace/applyEdit, which Neovim applies to the buffers.
function M.code(command, line1, line2, instruction, callback)
  local arg = range_arg(line1, line2)
  arg.instruction = instruction
  execute(command, { arg }, function(err, result)
    M.last_result = result
    if not err and result and command == 'ctx.explain' then
      show_answer('Explain', result.answer)
    end
    if callback then
      callback(err, result)
    end
  end)
end

-- ---- inline completion as virtual text ----

local ns = vim.api.nvim_create_namespace('ctx_inline')
local pending -- {client, id} of the request in flight
M.inline_text = nil -- the completion shown, for tests and statuslines

function M.clear_inline()
  vim.api.nvim_buf_clear_namespace(0, ns, 0, -1)
  M.inline_text = nil
  if pending then
    pcall(function()
      if vim.fn.has('nvim-0.11') == 1 then
        pending.client:cancel_request(pending.id)
      else
        pending.client.cancel_request(pending.id)
      end
    end)
    pending = nil
  end
end

--- Request an inline completion at the cursor; it shows as virtual text until accepted or typed over.
function M.complete(callback)
  M.clear_inline()
  local bufnr = vim.api.nvim_get_current_buf()
  local client = client_for(bufnr)
  if not client then
    return
  end
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local line = vim.api.nvim_buf_get_lines(bufnr, row - 1, row, false)[1] or ''
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = row - 1, character = vim.str_utfindex(line, col) },
    context = { triggerKind = 1 },
  }
  local ok, id = request(client, 'textDocument/inlineCompletion', params, function(err, result)
    pending = nil
    local item = not err and result and result.items and result.items[1]
    local cur = vim.api.nvim_win_get_cursor(0)
    if item and item.insertText ~= '' and cur[1] == row and cur[2] == col then
      local lines = vim.split(item.insertText, '\n')
      local virt_lines = {}
      for i = 2, #lines do
        table.insert(virt_lines, { { lines[i], 'Comment' } })
      end
      vim.api.nvim_buf_set_extmark(bufnr, ns, row - 1, col, {
        virt_text = { { lines[1], 'Comment' } },
        virt_text_pos = 'overlay',
        virt_lines = #virt_lines > 0 and virt_lines or nil,
      })
      M.inline_text = item.insertText
      M.inline_pos = { row, col }
    end
    if callback then
      callback(err, result)
    end
  end, bufnr)
  if ok then
    pending = { client = client, id = id }
  end
end

--- Insert the completion shown at the cursor.
function M.accept()
  local text, pos = M.inline_text, M.inline_pos
  M.clear_inline()
  if not text then
    return false
  end
  local lines = vim.split(text, '\n')
  vim.api.nvim_buf_set_text(0, pos[1] - 1, pos[2], pos[1] - 1, pos[2], lines)
  local last = #lines == 1 and pos[2] + #lines[1] or #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { pos[1] + #lines - 1, last })
  return true
end

local function set_keymaps()
  local keys = M.config.keymaps
  if not keys then
    return
  end
  keys = keys == true and default_keys or vim.tbl_extend('force', default_keys, keys)
  local map = function(mode, lhs, rhs, desc)
    if lhs then
      vim.keymap.set(mode, lhs, rhs, { desc = desc, silent = true })
    end
  end
  map('n', keys.ask, ':CtxAsk ', 'ctx: ask about the repository')
  map('n', keys.review, '<cmd>CtxReview<cr>', 'ctx: review this file')
  map({ 'n', 'x' }, keys.fix, ':CtxFix<cr>', 'ctx: fix these lines')
  map({ 'n', 'x' }, keys.explain, ':CtxExplain<cr>', 'ctx: explain these lines')
  map('i', keys.complete, function() M.complete() end, 'ctx: inline completion')
  map('i', keys.accept, function()
    if not M.accept() then
      vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes('<CR>', true, false, true), 'n', false)
    end
  end, 'ctx: accept the inline completion')
end

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
  vim.api.nvim_create_user_command('CtxAsk', function(o)
    local q = o.args ~= '' and o.args or vim.fn.input('ctx ask: ')
    if q ~= '' then
      M.ask(q, o.range > 0 and o.line1 or nil, o.range > 0 and o.line2 or nil)
    end
  end, { nargs = '*', range = true, desc = 'Ask the ctx agent (with a range: about those lines)' })
  vim.api.nvim_create_user_command('CtxReview', function()
    M.review()
  end, { desc = 'Review this file with the ctx agent: findings become diagnostics' })
  vim.api.nvim_create_user_command('CtxFix', function(o)
    M.code('ctx.fix', o.line1, o.line2, o.args ~= '' and o.args or nil)
  end, { nargs = '*', range = true, desc = 'Fix these lines with the ctx agent (an edit to apply)' })
  vim.api.nvim_create_user_command('CtxRefactor', function(o)
    M.code('ctx.refactor', o.line1, o.line2, o.args ~= '' and o.args or nil)
  end, { nargs = '*', range = true, desc = 'Refactor these lines with the ctx agent' })
  vim.api.nvim_create_user_command('CtxWriteTests', function(o)
    M.code('ctx.writeTests', o.line1, o.line2)
  end, { range = true, desc = 'Write tests for these lines with the ctx agent' })
  vim.api.nvim_create_user_command('CtxExplain', function(o)
    M.code('ctx.explain', o.line1, o.line2)
  end, { range = true, desc = 'Explain these lines with the ctx agent' })
  set_keymaps()
  if M.config.inline then
    local timer = vim.loop.new_timer()
    vim.api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, {
      group = group,
      callback = function()
        M.clear_inline() -- typing on makes the shown completion stale (and cancels the request)
        timer:stop()
        timer:start(M.config.inline_delay_ms, 0, vim.schedule_wrap(function()
          if vim.fn.mode() == 'i' and #get_clients() > 0 then
            M.complete()
          end
        end))
      end,
    })
    vim.api.nvim_create_autocmd('InsertLeave', { group = group, callback = function() M.clear_inline() end })
  end
  -- buffers already open when setup runs
  for _, b in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(b) and wanted(b) then
      M.start(b)
    end
  end
end

return M
