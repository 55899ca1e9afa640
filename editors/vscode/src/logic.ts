// The extension's pure logic: no `vscode` import, so node's test runner covers it directly.

/** The settings the extension reads (contributes.configuration in package.json). */
export interface CtxSettings {
  path: string;
  socket: string;
  ctxdPath: string;
  statusIntervalSeconds: number;
}

export const defaultSettings: CtxSettings = {
  path: 'ctx',
  socket: '',
  ctxdPath: '',
  statusIntervalSeconds: 60,
};

/** Settings as read from a configuration getter, with types checked and defaults applied. */
export function readSettings(get: (key: string) => unknown): CtxSettings {
  const str = (k: keyof CtxSettings): string => {
    const v = get(k);
    return typeof v === 'string' ? v.trim() : (defaultSettings[k] as string);
  };
  const iv = get('statusIntervalSeconds');
  return {
    path: str('path') || defaultSettings.path,
    socket: str('socket'),
    ctxdPath: str('ctxdPath'),
    statusIntervalSeconds:
      typeof iv === 'number' && Number.isFinite(iv) && iv >= 0 ? iv : defaultSettings.statusIntervalSeconds,
  };
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
      return {
        text: `$(database) ctxd ${duration(d.uptime_ms)}`,
        tooltip: `ctxd ${d.version}, pid ${d.pid}, ${d.connections} client(s) — click for details`,
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
