import assert = require('node:assert/strict');
import test = require('node:test');

import {
  StatusResult,
  askRequest,
  codeRequest,
  errorMessage,
  formatAnswer,
  formatTokens,
  initializationOptions,
  residentTokens,
  reviewRequest,
  formatStatus,
  parseStatus,
  readSettings,
  serverCommand,
  statusBar,
  statusRequest,
} from '../logic';
import { sample } from './fixtures';

test('readSettings applies defaults and ignores wrong types', () => {
  const defaults = { reviewOnSave: true, openRepository: true, inlineMaxTokens: 64 };
  assert.deepEqual(readSettings(() => undefined), { path: 'ctx', socket: '', ctxdPath: '', statusIntervalSeconds: 60, ...defaults });
  const cfg: Record<string, unknown> = { path: '  /opt/ctx/bin/ctx ', socket: 42, ctxdPath: '/opt/ctxd', statusIntervalSeconds: -5,
    reviewOnSave: 'no', openRepository: false, inlineMaxTokens: 2000 };
  assert.deepEqual(readSettings((k) => cfg[k]), {
    path: '/opt/ctx/bin/ctx',
    socket: '',
    ctxdPath: '/opt/ctxd',
    statusIntervalSeconds: 60,
    reviewOnSave: true,
    openRepository: false,
    inlineMaxTokens: 64,
  });
  assert.equal(readSettings((k) => (k === 'path' ? '' : k === 'statusIntervalSeconds' ? 0 : undefined)).path, 'ctx');
  assert.equal(readSettings((k) => (k === 'statusIntervalSeconds' ? 0 : undefined)).statusIntervalSeconds, 0);
  assert.equal(readSettings((k) => (k === 'statusIntervalSeconds' ? NaN : undefined)).statusIntervalSeconds, 60);
});

test('serverCommand puts global options before the subcommand', () => {
  assert.deepEqual(serverCommand(readSettings(() => undefined)), { command: 'ctx', args: ['lsp'] });
  assert.deepEqual(
    serverCommand({ path: '/b/ctx', socket: '/tmp/s.sock', ctxdPath: '/b/ctxd', statusIntervalSeconds: 1 }),
    { command: '/b/ctx', args: ['--socket', '/tmp/s.sock', '--ctxd', '/b/ctxd', 'lsp'] },
  );
});

test('statusRequest names the server command', () => {
  assert.deepEqual(statusRequest(), { command: 'ctx.status', arguments: [] });
});

test('parseStatus accepts a real shape and names the first bad field', () => {
  assert.equal(parseStatus(sample), sample);
  assert.throws(() => parseStatus(null), /result must be an object/);
  assert.throws(() => parseStatus({ lsp: {} }), /result\.daemon must be an object/);
  assert.throws(() => parseStatus({ daemon: { ...sample.daemon, pid: '1' }, lsp: sample.lsp }), /result\.daemon\.pid must be a number/);
  assert.throws(() => parseStatus({ daemon: { ...sample.daemon, socket: 1 }, lsp: sample.lsp }), /result\.daemon\.socket must be a string/);
  assert.throws(() => parseStatus({ daemon: sample.daemon, lsp: { documents: {} } }), /documents must be an array/);
});

test('formatStatus renders every field', () => {
  assert.deepEqual(formatStatus(sample), [
    'ctxd 0.1.0 (protocol 1), pid 4242',
    'socket    /run/user/1000/ctxd/ctxd.sock',
    'started   2026-11-28T21:00:00Z (up 1h 2m)',
    'clients   2 connected, 7 since start',
    'requests  12 answered, 1 errors',
    'ctx lsp   0.1.0, pid 77, positions in utf-16',
    'buffers   2 open:',
    '  file:///w/a.c  v3  18 bytes, 4 lines (unsaved)',
    '  file:///w/b.py  v9  0 bytes, 1 lines (saved, OUT OF STEP)',
  ]);
  const bare: StatusResult = {
    daemon: { version: '0.2.0', protocol: 1, pid: 1, socket: 's', started: 't', uptime_ms: 61000, connections: 1 },
    lsp: { version: '0.2.0', pid: 2, positionEncoding: 'utf-8', documents: [] },
  };
  const lines = formatStatus(bare);
  assert.equal(lines[2], 'started   t (up 1m 1s)');
  assert.equal(lines[3], 'clients   1 connected');
  assert.equal(lines.at(-1), 'buffers   none open');
  assert.equal(lines.length, 6);
});

test('statusBar for each daemon state', () => {
  assert.deepEqual(statusBar({ kind: 'up', status: sample }), {
    text: '$(database) ctxd 1h 2m',
    tooltip: 'ctxd 0.1.0, pid 4242, up 1h 2m, 2 client(s), no repository resident yet — click for details',
  });
  // with repositories resident: their tokens
  const withRepos = { ...sample, daemon: { ...sample.daemon, repos: [{ resident_tokens: 400000 }, { resident_tokens: 12345 }] } };
  assert.deepEqual(statusBar({ kind: 'up', status: withRepos as StatusResult }), {
    text: '$(database) ctxd 412.3k tok',
    tooltip: 'ctxd 0.1.0, pid 4242, up 1h 2m, 2 client(s), 412345 tokens resident — click for details',
  });
  assert.equal(statusBar({ kind: 'starting' }).text, '$(sync~spin) ctxd');
  assert.deepEqual(statusBar({ kind: 'error', message: 'cannot reach ctxd' }), {
    text: '$(error) ctxd',
    tooltip: 'ctx: cannot reach ctxd — click to retry',
  });
  assert.equal(statusBar({ kind: 'stopped' }).text, '$(circle-slash) ctxd');
});

test('errorMessage of errors, JSON-RPC errors and anything else', () => {
  assert.equal(errorMessage(new Error('boom')), 'boom');
  assert.equal(errorMessage({ code: -32803, message: 'cannot reach ctxd' }), 'cannot reach ctxd');
  assert.equal(errorMessage(7), '7');
});

test('resident tokens and their short form', () => {
  assert.equal(residentTokens(sample), 0);
  const r = { ...sample, daemon: { ...sample.daemon, repos: [{ resident_tokens: 5 }, { phase: 'ingesting' }, 'x'] } };
  assert.equal(residentTokens(r as StatusResult), 5);
  assert.deepEqual([0, 950, 1000, 4096, 12345, 999949, 1250000, 3e6].map(formatTokens),
    ['0', '950', '1k', '4.1k', '12.3k', '999.9k', '1.25M', '3M']);
});

test('the agent commands\' parameters', () => {
  assert.deepEqual(initializationOptions(readSettings(() => undefined)),
    { reviewOnSave: true, openRepository: true, inlineCompletion: { maxTokens: 64 } });
  const range = { start: { line: 1, character: 2 }, end: { line: 3, character: 0 } };
  assert.deepEqual(askRequest('why?'), { command: 'ctx.ask', arguments: ['why?'] });
  assert.deepEqual(askRequest('why?', 'file:///w/a.c', range),
    { command: 'ctx.ask', arguments: [{ question: 'why?', uri: 'file:///w/a.c', range }] });
  assert.deepEqual(codeRequest('ctx.fix', 'file:///w/a.c', range, ['unused x']),
    { command: 'ctx.fix', arguments: [{ uri: 'file:///w/a.c', range, diagnostics: ['unused x'] }] });
  assert.deepEqual(codeRequest('ctx.refactor', 'file:///w/a.c', range, [], 'split it').arguments[0],
    { uri: 'file:///w/a.c', range, diagnostics: [], instruction: 'split it' });
  assert.deepEqual(reviewRequest('file:///w/a.c'), { command: 'ctx.review', arguments: [{ uri: 'file:///w/a.c' }] });
});

test('formatAnswer: answer, diff, findings and how it stopped', () => {
  assert.deepEqual(formatAnswer('ctx: Fix', { stop: 'final', answer: 'done.\nok', diff: '--- a/x\n+++ b/x\n' }),
    ['--- ctx: Fix', 'done.', 'ok', '', 'suggested change:', '--- a/x', '+++ b/x']);
  assert.deepEqual(formatAnswer('ctx: Review', { findings: 2, stop: 'step_limit', steps: 8 }),
    ['--- ctx: Review', '2 finding(s), shown as diagnostics', '(stopped: step_limit after 8 steps)']);
  assert.deepEqual(formatAnswer('q', { diff: 'x', applyError: 'hunk 1 does not match' }),
    ['--- q', '', 'suggested change:', 'x', '', 'the change could not be turned into an edit: hunk 1 does not match']);
});
