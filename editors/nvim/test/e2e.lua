-- End to end: Neovim's own LSP client against the real `ctx lsp` and a real ctxd on a temporary
-- socket. Run by tests/lsp/nvim-e2e.sh as
--   nvim --headless --clean -c 'luafile editors/nvim/test/e2e.lua'
-- with CTX_BIN, CTXD_BIN, CTX_TEST_SOCKET, CTX_TEST_DIR and CTX_SOURCE_ROOT set. Prints TAP on
-- stdout and quits 0 when every check passed, 1 otherwise.
local env = function(k)
  local v = os.getenv(k)
  if not v or v == '' then
    io.stdout:write('Bail out! ' .. k .. ' is not set\n')
    vim.cmd('cquit 1')
  end
  return v
end
local ctx_bin, ctxd_bin = env('CTX_BIN'), env('CTXD_BIN')
local sock, dir, src = env('CTX_TEST_SOCKET'), env('CTX_TEST_DIR'), env('CTX_SOURCE_ROOT')
local repo = env('CTX_TEST_REPO') -- a git repository with src/math.c; ctxd runs with forced completions

local n, failed = 0, 0
local function check(ok, what, detail)
  n = n + 1
  io.stdout:write(string.format('%s %d - %s\n', ok and 'ok' or 'not ok', n, what))
  if not ok then
    failed = failed + 1
    if detail then
      io.stdout:write('# ' .. tostring(detail):gsub('\n', '\n# ') .. '\n')
    end
  end
  return ok
end
local function finish()
  io.stdout:write(string.format('1..%d\n', n))
  io.stdout:flush()
  vim.cmd(failed == 0 and 'qall!' or 'cquit 1')
end

local ok, err = pcall(function()
  io.stdout:write('# nvim ' .. tostring(vim.version().major) .. '.' .. tostring(vim.version().minor) ..
    '.' .. tostring(vim.version().patch) .. ', vim.lsp.start ' .. tostring(vim.lsp.start ~= nil) .. '\n')
  vim.opt.runtimepath:prepend(src .. '/editors/nvim')
  local ctx = require('ctx')
  local exit_code, exit_signal
  ctx.setup({
    cmd = { ctx_bin, '--socket', sock, '--ctxd', ctxd_bin, 'lsp' },
    notify = false,
    init_options = { reviewOnSave = false, inlineCompletion = { maxTokens = 8 } },
    keymaps = true,
    on_exit = function(code, signal)
      exit_code, exit_signal = code, signal
    end,
  })
  check(vim.fn.exists(':CtxStatus') == 2, ':CtxStatus is defined')
  for _, c in ipairs({ 'CtxAsk', 'CtxReview', 'CtxFix', 'CtxExplain', 'CtxRefactor', 'CtxWriteTests' }) do
    check(vim.fn.exists(':' .. c) == 2, ':' .. c .. ' is defined')
  end
  check(vim.fn.maparg('<leader>cr', 'n') ~= '' and vim.fn.maparg('<M-]>', 'i') ~= '', 'opt-in keymaps are set')

  -- a file with an astral character and CRLF-free lines; editing it starts the client
  local file = repo .. '/hello.c'
  local f = assert(io.open(file, 'w'))
  f:write('int main(void) { return 0; } // \u{1F600}\n')
  f:close()
  vim.cmd('edit ' .. file)
  local bufnr = vim.api.nvim_get_current_buf()

  local client
  local got = vim.wait(15000, function()
    for _, c in pairs(vim.lsp.buf_get_clients(bufnr)) do
      if c.name == 'ctx' and c.initialized then
        client = c
        return true
      end
    end
    return false
  end, 20)
  if not check(got, 'client started, initialized and attached to the buffer') then
    return
  end
  local caps = client.server_capabilities
  check(caps.textDocumentSync and caps.textDocumentSync.change == 2, 'server offers incremental sync',
    vim.inspect(caps.textDocumentSync))
  local cmds = caps.executeCommandProvider and caps.executeCommandProvider.commands or {}
  check(table.concat(cmds, ' ') == 'ctx.status ctx.ask ctx.explain ctx.fix ctx.refactor ctx.writeTests ctx.review',
    'server offers its commands', vim.inspect(caps))
  check(caps.codeActionProvider and caps.codeActionProvider.codeActionKinds and
    #caps.codeActionProvider.codeActionKinds == 3, 'server offers code actions', vim.inspect(caps))
  check(caps.completionProvider == nil and caps.hoverProvider == nil and caps.definitionProvider == nil,
    'no capability the server lacks')

  -- edits: Neovim sends them as incremental didChange; the server's byte count must follow
  vim.api.nvim_buf_set_lines(bufnr, 0, 0, false, { '/* \u{1F680} rocket */', '' })
  vim.api.nvim_buf_set_text(bufnr, 2, 0, 2, 3, { 'long' }) -- "int" -> "long"
  vim.api.nvim_buf_set_text(bufnr, 0, 3, 0, 7, { '\u{00E9}' }) -- the rocket -> é
  local lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
  local want_bytes = #table.concat(lines, '\n') + 1

  -- :CtxStatus, as a user runs it; the request flushes pending changes first
  ctx.last_status = nil
  vim.cmd('CtxStatus')
  got = vim.wait(15000, function() return ctx.last_status ~= nil or ctx.last_error ~= nil end, 20)
  if not check(got and ctx.last_status, ':CtxStatus answered', ctx.last_error) then
    return
  end
  local st = ctx.last_status
  check(st.daemon and st.daemon.protocol == 1 and st.daemon.pid > 0, 'a real ctxd answered', vim.inspect(st.daemon))
  check(st.daemon and st.daemon.socket == sock, 'on the test socket', st.daemon and st.daemon.socket)
  local doc = st.lsp and st.lsp.documents and st.lsp.documents[1]
  check(doc and doc.uri == vim.uri_from_bufnr(bufnr), 'the buffer is open in the server', vim.inspect(st.lsp))
  check(doc and doc.bytes == want_bytes, 'the server text has the buffer\'s ' .. want_bytes .. ' bytes',
    vim.inspect(doc))
  check(doc and doc.lines == #lines + 1, 'and its lines', vim.inspect(doc))
  check(doc and doc.version == vim.lsp.util.buf_versions[bufnr], 'and its version',
    vim.inspect(doc) .. ' vs ' .. tostring(vim.lsp.util.buf_versions[bufnr]))
  check(doc and doc.dirty == true and doc.desync == false, 'dirty and in step', vim.inspect(doc))
  check(ctx.describe(st):match('^ctxd 0%.%d+%.%d+ %(protocol 1%)') ~= nil, 'status text', ctx.describe(st))

  -- :w sends didSave with the text: clean again
  vim.cmd('silent write')
  ctx.last_status = nil
  vim.cmd('CtxStatus')
  vim.wait(15000, function() return ctx.last_status ~= nil end, 20)
  doc = ctx.last_status and ctx.last_status.lsp.documents[1]
  check(doc and doc.dirty == false and doc.bytes == want_bytes, 'didSave seen', vim.inspect(doc))

  -- :CtxAsk: the agent's (forced) answer comes back
  ctx.last_answer = nil
  vim.cmd('CtxAsk What is the answer?')
  got = vim.wait(60000, function() return ctx.last_answer ~= nil end, 20)
  check(got and ctx.last_answer == 'The answer is 42.', ':CtxAsk answer arrives', tostring(ctx.last_answer))

  -- :CtxReview on src/math.c: the (forced) finding becomes a diagnostic on line 3
  vim.cmd('edit ' .. repo .. '/src/math.c')
  local mbuf = vim.api.nvim_get_current_buf()
  vim.wait(5000, function() return #vim.lsp.buf_get_clients(mbuf) > 0 end, 20)
  vim.cmd('CtxReview')
  got = vim.wait(60000, function() return #vim.diagnostic.get(mbuf) > 0 end, 20)
  local d = vim.diagnostic.get(mbuf)[1]
  check(got and d and d.lnum == 2 and d.col == 0 and d.message == 'add subtracts' and
    d.severity == vim.diagnostic.severity.WARN and d.source == 'ctx', ':CtxReview diagnostics appear',
    vim.inspect(vim.diagnostic.get(mbuf)))

  -- inline completion before the ';' of line 3 (the noise model's text; 8 tokens at most), shown
  -- as virtual text and accepted into the buffer
  vim.api.nvim_win_set_cursor(0, { 3, 16 })
  local done, result
  ctx.complete(function(err, r) done, result = true, r end)
  vim.wait(60000, function() return done end, 20)
  local items = result and result.items
  check(type(items) == 'table', 'inline completion answered', vim.inspect(result))
  if items and items[1] then
    check(ctx.inline_text == items[1].insertText and
      #vim.api.nvim_buf_get_extmarks(mbuf, vim.api.nvim_create_namespace('ctx_inline'), 0, -1, {}) == 1,
      'shown as virtual text', vim.inspect(items))
    local before = table.concat(vim.api.nvim_buf_get_lines(mbuf, 0, -1, false), '\n')
    ctx.accept()
    local after = table.concat(vim.api.nvim_buf_get_lines(mbuf, 0, -1, false), '\n')
    check(after == before:gsub('a %- b;', 'a - b' .. items[1].insertText:gsub('%%', '%%%%') .. ';', 1), 'accepted into the buffer',
      after)
  end

  -- clean shutdown: shutdown + exit, and the server exits 0
  vim.lsp.stop_client(client.id)
  got = vim.wait(10000, function() return exit_code ~= nil end, 20)
  check(got and exit_code == 0 and exit_signal == 0, 'server exited 0 after shutdown/exit',
    'code ' .. tostring(exit_code) .. ' signal ' .. tostring(exit_signal))
end)
check(ok, 'no Lua error', err)
finish()
