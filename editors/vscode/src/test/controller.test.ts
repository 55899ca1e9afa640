// The controller against a stubbed `vscode` module and a scripted language client.
import './vscode-stub';

import assert = require('node:assert/strict');
import test = require('node:test');

import { LspClient, activateWith } from '../controller';
import { CtxSettings, formatStatus } from '../logic';
import { fake } from './vscode-stub';
import { sample } from './fixtures';

class ScriptedClient implements LspClient {
  started = 0;
  stopped = 0;
  requests: { method: string; params: unknown }[] = [];
  constructor(
    readonly settings: CtxSettings,
    private readonly answer: () => Promise<unknown>,
    private readonly startResult: () => Promise<void> = () => Promise.resolve(),
  ) {}
  start(): Promise<void> {
    this.started++;
    return this.startResult();
  }
  stop(): Promise<void> {
    this.stopped++;
    return Promise.resolve();
  }
  sendRequest(method: string, params: unknown): Promise<unknown> {
    this.requests.push({ method, params });
    return this.answer();
  }
}

function setup(answer: () => Promise<unknown>, startResult?: () => Promise<void>) {
  fake.reset();
  fake.config = { path: '/b/ctx', socket: '/tmp/t.sock', statusIntervalSeconds: 0 };
  const clients: ScriptedClient[] = [];
  const context = { subscriptions: [] as { dispose(): unknown }[] };
  const c = activateWith(context as never, (s) => {
    const cl = new ScriptedClient(s, answer, startResult);
    clients.push(cl);
    return cl;
  });
  return { c, clients, context };
}

const tick = () => new Promise((r) => setImmediate(r));

test('activation: commands, status bar, one client started with the settings', async () => {
  const { c, clients, context } = setup(() => Promise.resolve(sample));
  await tick();
  assert.deepEqual([...fake.commands.keys()].sort(), ['ctx.askQuestion', 'ctx.explainSelection', 'ctx.fixSelection',
    'ctx.restart', 'ctx.reviewFile', 'ctx.showStatus']);
  assert.equal(fake.items.length, 1);
  assert.equal(fake.items[0].command, 'ctx.showStatus');
  assert.equal(fake.items[0].visible, true);
  assert.equal(fake.outputs[0].name, 'ctx');
  assert.equal(clients.length, 1);
  assert.equal(clients[0].started, 1);
  assert.equal(clients[0].settings.socket, '/tmp/t.sock');
  // the first status is fetched quietly: the bar shows it, the channel stays empty
  assert.deepEqual(clients[0].requests, [
    { method: 'workspace/executeCommand', params: { command: 'ctx.status', arguments: [] } },
  ]);
  assert.equal(c.state.kind, 'up');
  assert.equal(fake.items[0].text, '$(database) ctxd 1h 2m');
  assert.deepEqual(fake.outputs[0].lines, []);
  for (const d of context.subscriptions) d.dispose();
  await tick();
  assert.equal(clients[0].stopped, 1);
  assert.equal(fake.items[0].disposed, true);
});

test('ctx.showStatus prints the status in the output channel', async () => {
  const { clients } = setup(() => Promise.resolve(sample));
  await tick();
  await fake.commands.get('ctx.showStatus')!();
  const out = fake.outputs[0];
  assert.match(out.lines[0], /^--- ctx status \(\d{4}-\d\d-\d\dT/);
  assert.deepEqual(out.lines.slice(1), formatStatus(sample));
  assert.equal(out.shown, 1);
  assert.equal(clients[0].requests.length, 2);
  assert.deepEqual(fake.errors, []);
});

test('a failing ctx.status: error state, message, output line', async () => {
  const { c } = setup(() => Promise.reject({ code: -32803, message: 'starting ctxd failed: no such file' }));
  await tick();
  assert.equal(c.state.kind, 'error');
  assert.equal(fake.items[0].text, '$(error) ctxd');
  assert.equal(fake.errors.length, 0); // quiet on the background refresh
  await fake.commands.get('ctx.showStatus')!();
  assert.deepEqual(fake.errors, ['ctx status: starting ctxd failed: no such file']);
  assert.deepEqual(fake.outputs[0].lines, ['ctx status failed: starting ctxd failed: no such file']);
});

test('a malformed result is an error naming the field', async () => {
  const { c } = setup(() => Promise.resolve({ daemon: { pid: 1 }, lsp: { documents: [] } }));
  await tick();
  assert.deepEqual(c.state, { kind: 'error', message: 'result.daemon.protocol must be a number' });
});

test('a server that cannot start: error state, and showStatus retries', async () => {
  let fail = true;
  const { c, clients } = setup(
    () => Promise.resolve(sample),
    () => (fail ? Promise.reject(new Error('spawn /b/ctx ENOENT')) : Promise.resolve()),
  );
  await tick();
  assert.deepEqual(c.state, { kind: 'error', message: 'cannot start /b/ctx lsp: spawn /b/ctx ENOENT' });
  assert.deepEqual(fake.outputs[0].lines, ['cannot start /b/ctx lsp: spawn /b/ctx ENOENT']);
  await fake.commands.get('ctx.showStatus')!();
  assert.equal(clients.length, 2);
  assert.deepEqual(fake.errors, ['ctx: cannot start /b/ctx lsp: spawn /b/ctx ENOENT']);
  fail = false;
  const r = await fake.commands.get('ctx.showStatus')!();
  assert.equal(clients.length, 3);
  assert.equal(c.state.kind, 'up');
  assert.deepEqual(r, sample);
  assert.deepEqual(fake.outputs[0].lines.slice(-formatStatus(sample).length), formatStatus(sample));
});

test('a change of ctx settings restarts the server with them', async () => {
  const { clients } = setup(() => Promise.resolve(sample));
  await tick();
  fake.config = { path: '/other/ctx' };
  fake.configListeners[0]({ affectsConfiguration: (s) => s === 'editor' });
  await tick();
  assert.equal(clients.length, 1);
  fake.configListeners[0]({ affectsConfiguration: (s) => s === 'ctx' });
  await tick();
  await tick();
  assert.equal(clients.length, 2);
  assert.equal(clients[0].stopped, 1);
  assert.equal(clients[1].settings.path, '/other/ctx');
  assert.equal(clients[1].started, 1);
});

test('the agent commands gather their arguments and print answers', async () => {
  let answer: unknown = sample;
  const { clients } = setup(() => Promise.resolve(answer));
  await tick();
  const uri = { toString: () => 'file:///w/a.c' };
  fake.editor = {
    document: { uri },
    selection: { start: { line: 2, character: 4 }, end: { line: 2, character: 4 } },
  };
  fake.diagnostics = [
    { message: 'add subtracts', range: { start: { line: 2 }, end: { line: 2 } } },
    { message: 'elsewhere', range: { start: { line: 9 }, end: { line: 9 } } },
  ];
  answer = { stop: 'final', answer: 'Fixed.', diff: '--- a/a.c\n+++ b/a.c\n' };
  await fake.commands.get('ctx.fixSelection')!();
  // no selection: the cursor's whole line, with the diagnostics there
  assert.deepEqual(clients[0].requests.at(-1), {
    method: 'workspace/executeCommand',
    params: { command: 'ctx.fix', arguments: [{ uri: 'file:///w/a.c', range: { start: { line: 2, character: 0 },
      end: { line: 3, character: 0 } }, diagnostics: ['add subtracts'] }] },
  });
  assert.deepEqual(fake.outputs[0].lines, ['--- ctx: Fix', 'Fixed.', '', 'suggested change:', '--- a/a.c', '+++ b/a.c']);
  // ask with a selection: about it
  fake.editor = { document: { uri }, selection: { start: { line: 0, character: 1 }, end: { line: 1, character: 3 } } };
  fake.inputs = ['What is this?'];
  answer = { stop: 'final', answer: 'A function.' };
  const r = await fake.commands.get('ctx.askQuestion')!();
  assert.deepEqual(r, answer);
  assert.deepEqual(clients[0].requests.at(-1)!.params, { command: 'ctx.ask', arguments: [{ question: 'What is this?',
    uri: 'file:///w/a.c', range: { start: { line: 0, character: 1 }, end: { line: 1, character: 3 } } }] });
  assert.equal(fake.outputs[0].lines.at(-1), 'A function.');
  // a dismissed input box asks nothing
  const n = clients[0].requests.length;
  await fake.commands.get('ctx.askQuestion')!();
  assert.equal(clients[0].requests.length, n);
  await fake.commands.get('ctx.reviewFile')!();
  assert.deepEqual(clients[0].requests.at(-1)!.params, { command: 'ctx.review', arguments: [{ uri: 'file:///w/a.c' }] });
  // without an editor: an error, no request
  fake.editor = undefined;
  await fake.commands.get('ctx.explainSelection')!();
  assert.deepEqual(fake.errors, ['ctx: no active editor']);
  assert.equal(clients[0].requests.length, n + 1);
});
