// Test data shared by the extension's tests.
import { StatusResult } from '../logic';

export const sample: StatusResult = {
  daemon: {
    version: '0.1.0',
    protocol: 1,
    pid: 4242,
    socket: '/run/user/1000/ctxd/ctxd.sock',
    started: '2026-11-28T21:00:00Z',
    uptime_ms: 3723000,
    connections: 2,
    connections_accepted: 7,
    requests: 12,
    errors: 1,
    cuda_built: false,
  },
  lsp: {
    version: '0.1.0',
    pid: 77,
    positionEncoding: 'utf-16',
    documents: [
      { uri: 'file:///w/a.c', languageId: 'c', version: 3, bytes: 18, lines: 4, dirty: true, desync: false },
      { uri: 'file:///w/b.py', languageId: 'python', version: 9, bytes: 0, lines: 1, dirty: false, desync: true },
    ],
  },
};
