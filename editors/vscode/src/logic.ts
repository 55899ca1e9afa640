// The extension's pure logic: no `vscode` import, so node's test runner covers it directly.

/** The settings the extension reads (contributes.configuration in package.json). */
export interface CtxSettings {
  path: string;
  socket: string;
  ctxdPath: string;
  statusIntervalSeconds: number;
  /** Review saved files and show the findings as diagnostics (ctx lsp's reviewOnSave). */
  reviewOnSave?: boolean;
  /** Make the workspace's repository resident when the server starts. */
  openRepository?: boolean;
  /** Token budget of one inline completion (fill-in-the-middle). */
  inlineMaxTokens?: number;
}

export const defaultSettings: CtxSettings = {
  path: 'ctx',
  socket: '',
  ctxdPath: '',
  statusIntervalSeconds: 60,
  reviewOnSave: true,
  openRepository: true,
  inlineMaxTokens: 64,
};

/** Settings as read from a configuration getter, with types checked and defaults applied. */
export function readSettings(get: (key: string) => unknown): CtxSettings {
  const str = (k: keyof CtxSettings): string => {
    const v = get(k);
    return typeof v === 'string' ? v.trim() : (defaultSettings[k] as string);
  };
  const iv = get('statusIntervalSeconds');
  const bool = (k: 'reviewOnSave' | 'openRepository'): boolean => {
    const v = get(k);
    return typeof v === 'boolean' ? v : (defaultSettings[k] as boolean);
  };
  const mt = get('inlineMaxTokens');
  return {
    path: str('path') || defaultSettings.path,
    socket: str('socket'),
    ctxdPath: str('ctxdPath'),
    statusIntervalSeconds:
      typeof iv === 'number' && Number.isFinite(iv) && iv >= 0 ? iv : defaultSettings.statusIntervalSeconds,
    reviewOnSave: bool('reviewOnSave'),
    openRepository: bool('openRepository'),
    inlineMaxTokens:
      typeof mt === 'number' && Number.isInteger(mt) && mt >= 1 && mt <= 1024 ? mt : defaultSettings.inlineMaxTokens,
  };
}

/** ctx lsp's initializationOptions from the settings (lsp/README.md). */
export function initializationOptions(s: CtxSettings): Record<string, unknown> {
  return {
    reviewOnSave: s.reviewOnSave ?? true,
    openRepository: s.openRepository ?? true,
    inlineCompletion: { maxTokens: s.inlineMaxTokens ?? 64 },
  };
}

/** An LSP range (UTF-16 positions, as VS Code counts). */
export interface LspRange {
  start: { line: number; character: number };
  end: { line: number; character: number };
}

/** workspace/executeCommand params for ctx.ask: the question, about a selection when one is given. */
export function askRequest(question: string, uri?: string, range?: LspRange): { command: string; arguments: unknown[] } {
  return { command: 'ctx.ask', arguments: [uri && range ? { question, uri, range } : question] };
}

/** workspace/executeCommand params for the code commands (ctx.explain, ctx.fix, ctx.refactor,
 * ctx.writeTests) on a range, with the diagnostics' messages there. */
export function codeRequest(
  command: 'ctx.explain' | 'ctx.fix' | 'ctx.refactor' | 'ctx.writeTests',
  uri: string,
  range: LspRange,
  diagnostics: string[] = [],
  instruction?: string,
): { command: string; arguments: unknown[] } {
  const arg: Record<string, unknown> = { uri, range, diagnostics };
  if (instruction) arg.instruction = instruction;
  return { command, arguments: [arg] };
}

export function reviewRequest(uri: string): { command: string; arguments: unknown[] } {
  return { command: 'ctx.review', arguments: [{ uri }] };
}

/** What the agent's commands return (daemon/PROTOCOL.md agent.run, plus the server's edit). */
export interface AgentResult {
  stop?: string;
  answer?: string;
  steps?: number;
  diff?: string;
  findings?: number | unknown[];
  applyError?: string;
}

/** The lines the output channel shows for an agent answer. */
export function formatAnswer(title: string, r: AgentResult): string[] {
  const out = [`--- ${title}`];
  if (r.answer) out.push(...r.answer.split('\n'));
  if (r.diff) out.push('', 'suggested change:', ...r.diff.replace(/\n$/, '').split('\n'));
  if (r.applyError) out.push('', `the change could not be turned into an edit: ${r.applyError}`);
  if (typeof r.findings === 'number') out.push(`${r.findings} finding(s), shown as diagnostics`);
  if (r.stop && r.stop !== 'final') out.push(`(stopped: ${r.stop}${r.steps !== undefined ? ` after ${r.steps} steps` : ''})`);
  return out;
}

/** Tokens resident in ctxd over all open repositories (daemon.status repos[].resident_tokens). */
export function residentTokens(r: StatusResult): number {
  const repos = (r.daemon as { repos?: unknown }).repos;
  if (!Array.isArray(repos)) return 0;
  let n = 0;
  for (const x of repos) {
    const t = (x as { resident_tokens?: unknown }).resident_tokens;
    if (typeof t === 'number' && Number.isFinite(t)) n += t;
  }
  return n;
}

/** 950, 12.3k, 1.25M */
export function formatTokens(n: number): string {
  if (n < 1000) return `${n}`;
  if (n < 1e6) return `${(n / 1000).toFixed(n < 1e4 ? 2 : 1).replace(/\.?0+$/, '')}k`;
  return `${(n / 1e6).toFixed(2).replace(/\.?0+$/, '')}M`;
}

/** The server process: `ctx [--socket S] [--ctxd D] lsp` (global options come before the command). */
export function serverCommand(s: CtxSettings): { command: string; args: string[] } {
  const args: string[] = [];
  if (s.socket) args.push('--socket', s.socket);
  if (s.ctxdPath) args.push('--ctxd', s.ctxdPath);
  args.push('lsp');
  return { command: s.path, args };
}

/** The workspace/executeCommand params for the server's ctx.status. */
export function statusRequest(): { command: string; arguments: unknown[] } {
  return { command: 'ctx.status', arguments: [] };
}

/** What ctx.status returns (daemon/PROTOCOL.md daemon.status, plus the server's own state). */
export interface DaemonStatus {
  version: string;
  protocol: number;
  pid: number;
  socket: string;
  started: string;
  uptime_ms: number;
  connections: number;
  connections_accepted?: number;
  requests?: number;
  errors?: number;
  cuda_built?: boolean;
}

export interface OpenDocument {
  uri: string;
  languageId: string;
  version: number;
  bytes: number;
  lines: number;
  dirty: boolean;
  desync: boolean;
}

export interface StatusResult {
  daemon: DaemonStatus;
  lsp: { version: string; pid: number; positionEncoding: string; documents: OpenDocument[] };
}

/** Check a ctx.status result's shape; throws an Error naming the first bad field. */
export function parseStatus(v: unknown): StatusResult {
  const obj = (x: unknown, name: string): Record<string, unknown> => {
    if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new Error(`${name} must be an object`);
    return x as Record<string, unknown>;
  };
  const r = obj(v, 'result');
  const d = obj(r.daemon, 'result.daemon');
  const l = obj(r.lsp, 'result.lsp');
  for (const k of ['pid', 'protocol', 'uptime_ms', 'connections']) {
    if (typeof d[k] !== 'number') throw new Error(`result.daemon.${k} must be a number`);
  }
  for (const k of ['version', 'socket']) {
    if (typeof d[k] !== 'string') throw new Error(`result.daemon.${k} must be a string`);
  }
  if (!Array.isArray(l.documents)) throw new Error('result.lsp.documents must be an array');
  return v as StatusResult;
}

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

/** The lines the output channel shows for a status result. */
export function formatStatus(r: StatusResult): string[] {
  const d = r.daemon;
  const out = [
    `ctxd ${d.version} (protocol ${d.protocol}), pid ${d.pid}`,
    `socket    ${d.socket}`,
    `started   ${d.started} (up ${duration(d.uptime_ms)})`,
    `clients   ${d.connections} connected` +
      (d.connections_accepted !== undefined ? `, ${d.connections_accepted} since start` : ''),
  ];
  if (d.requests !== undefined) out.push(`requests  ${d.requests} answered, ${d.errors ?? 0} errors`);
  out.push(`ctx lsp   ${r.lsp.version}, pid ${r.lsp.pid}, positions in ${r.lsp.positionEncoding}`);
  if (r.lsp.documents.length === 0) {
    out.push('buffers   none open');
  } else {
    out.push(`buffers   ${r.lsp.documents.length} open:`);
    for (const doc of r.lsp.documents) {
      const flags = [doc.dirty ? 'unsaved' : 'saved', ...(doc.desync ? ['OUT OF STEP'] : [])].join(', ');
      out.push(`  ${doc.uri}  v${doc.version}  ${doc.bytes} bytes, ${doc.lines} lines (${flags})`);
    }
  }
  return out;
}

/** The daemon states the status bar shows. */
export type DaemonState =
  | { kind: 'starting' }
  | { kind: 'up'; status: StatusResult }
  | { kind: 'error'; message: string }
  | { kind: 'stopped' };

export function statusBar(state: DaemonState): { text: string; tooltip: string } {
  switch (state.kind) {
    case 'starting':
      return { text: '$(sync~spin) ctxd', tooltip: 'ctx: starting the language server' };
    case 'up': {
      const d = state.status.daemon;
      const tok = residentTokens(state.status);
      return {
        text: tok > 0 ? `$(database) ctxd ${formatTokens(tok)} tok` : `$(database) ctxd ${duration(d.uptime_ms)}`,
        tooltip:
          `ctxd ${d.version}, pid ${d.pid}, up ${duration(d.uptime_ms)}, ${d.connections} client(s)` +
          (tok > 0 ? `, ${tok} tokens resident` : ', no repository resident yet') +
          ' — click for details',
      };
    }
    case 'error':
      return { text: '$(error) ctxd', tooltip: `ctx: ${state.message} — click to retry` };
    case 'stopped':
      return { text: '$(circle-slash) ctxd', tooltip: 'ctx: the language server is not running — click to retry' };
  }
}

/** The error text of a failed request (a JSON-RPC ResponseError or anything thrown). */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === 'object' && e !== null && typeof (e as { message?: unknown }).message === 'string') {
    return (e as { message: string }).message;
  }
  return String(e);
}
