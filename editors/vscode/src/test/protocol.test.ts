// The extension's requests at the protocol level, without VS Code: the same JSON-RPC library that
// vscode-languageclient uses, speaking to the real `ctx lsp` (CTX_BIN) and a real ctxd (CTXD_BIN)
// on a temporary socket, started with the command line the extension builds. Skipped when the
// binaries are not given (the meson test gives them).
import assert = require('node:assert/strict');
import cp = require('node:child_process');
import fs = require('node:fs');
import os = require('node:os');
import path = require('node:path');
import test = require('node:test');
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';

import { formatStatus, parseStatus, serverCommand, statusRequest } from '../logic';

const ctx = process.env.CTX_BIN;
const ctxd = process.env.CTXD_BIN;

test('initialize, document sync, ctx.status, shutdown/exit against the real server', {
  skip: !ctx || !ctxd ? 'CTX_BIN and CTXD_BIN are not set' : false,
  timeout: 90000,
}, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctx-vscode-'));
  const sock = path.join(dir, 'ctxd.sock');
  const { command, args } = serverCommand({ path: ctx!, socket: sock, ctxdPath: ctxd!, statusIntervalSeconds: 0 });
  const proc = cp.spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const conn = createMessageConnection(new StreamMessageReader(proc.stdout!), new StreamMessageWriter(proc.stdin!));
  const notes: { method: string; params: unknown }[] = [];
  conn.onNotification((method: string, params: unknown) => {
    notes.push({ method, params });
  });
  conn.listen();
  try {
    const init = (await conn.sendRequest('initialize', {
      processId: process.pid,
      rootUri: null,
      clientInfo: { name: 'ctx-vscode-protocol-test' },
      capabilities: { window: { workDoneProgress: true }, general: { positionEncodings: ['utf-16'] } },
    })) as { capabilities: Record<string, unknown>; serverInfo: { name: string } };
    assert.deepEqual(init.capabilities, {
      positionEncoding: 'utf-16',
      textDocumentSync: { openClose: true, change: 2, save: { includeText: true } },
      executeCommandProvider: {
        commands: ['ctx.status', 'ctx.ask', 'ctx.explain', 'ctx.fix', 'ctx.refactor', 'ctx.writeTests', 'ctx.review'],
        workDoneProgress: true,
      },
      codeActionProvider: { codeActionKinds: ['quickfix', 'refactor.rewrite', 'source'] },
      inlineCompletionProvider: {},
    });
    assert.equal(init.serverInfo.name, 'ctx');
    await conn.sendNotification('initialized', {});
    const uri = 'untitled:Untitled-1';
    await conn.sendNotification('textDocument/didOpen', {
      textDocument: { uri, languageId: 'typescript', version: 1, text: 'const s = "\u{1F600}";\n' },
    });
    // VS Code sends UTF-16 ranges: replace the emoji (columns 11..13) with "ok"
    await conn.sendNotification('textDocument/didChange', {
      textDocument: { uri, version: 2 },
      contentChanges: [{ range: { start: { line: 0, character: 11 }, end: { line: 0, character: 13 } }, rangeLength: 2, text: 'ok' }],
    });
    const r = parseStatus(await conn.sendRequest('workspace/executeCommand', statusRequest()));
    assert.equal(r.daemon.socket, sock);
    assert.equal(r.daemon.protocol, 1);
    assert.ok(r.daemon.pid > 0);
    assert.deepEqual(r.lsp.documents, [
      { uri, languageId: 'typescript', version: 2, bytes: 'const s = "ok";\n'.length, lines: 2, dirty: true, desync: false },
    ]);
    assert.equal(formatStatus(r)[1], `socket    ${sock}`);
    // the code actions the editor lists for a selection, with the arguments the commands take
    const range = { start: { line: 0, character: 0 }, end: { line: 0, character: 5 } };
    const fileUri = 'file:///w/a.ts';
    await conn.sendNotification('textDocument/didOpen', {
      textDocument: { uri: fileUri, languageId: 'typescript', version: 1, text: 'const n = 1;\n' },
    });
    const actions = (await conn.sendRequest('textDocument/codeAction', {
      textDocument: { uri: fileUri }, range, context: { diagnostics: [] },
    })) as { title: string; command: { command: string; arguments: unknown[] } }[];
    assert.deepEqual(actions.map((a) => a.command.command), ['ctx.explain', 'ctx.fix', 'ctx.refactor', 'ctx.writeTests']);
    assert.deepEqual(actions[1].command.arguments, [{ uri: fileUri, range, diagnostics: [] }]);
    // inline completion: fill-in-the-middle on ctxd, answered in the 3.18 shape at the cursor
    const ic = (await conn.sendRequest('textDocument/inlineCompletion', {
      textDocument: { uri: fileUri }, position: { line: 0, character: 10 }, context: { triggerKind: 1 },
    })) as { items: { insertText: string; range: typeof range }[] };
    assert.ok(Array.isArray(ic.items) && ic.items.length <= 1);
    for (const it of ic.items) {
      assert.equal(typeof it.insertText, 'string');
      assert.deepEqual(it.range, { start: { line: 0, character: 10 }, end: { line: 0, character: 10 } });
    }
    // an unknown command is an error the extension reports, not a crash
    await assert.rejects(conn.sendRequest('workspace/executeCommand', { command: 'ctx.nope' }), /unknown command "ctx\.nope"/);
    assert.equal(await conn.sendRequest('shutdown'), null);
    await conn.sendNotification('exit');
    assert.equal(await exited, 0);
    assert.deepEqual(notes, []);
  } finally {
    conn.dispose();
    proc.kill();
    cp.spawnSync(ctx!, ['--socket', sock, 'stop'], { stdio: 'ignore' });
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
