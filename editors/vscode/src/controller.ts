// Everything the extension does with VS Code, apart from constructing the LanguageClient (which
// extension.ts passes in as a factory), so that tests drive it with a stubbed `vscode` module.
import * as vscode from 'vscode';

import {
  CtxSettings,
  DaemonState,
  StatusResult,
  errorMessage,
  formatStatus,
  parseStatus,
  readSettings,
  statusBar,
  statusRequest,
} from './logic';

/** The part of vscode-languageclient's LanguageClient the controller uses. */
export interface LspClient {
  start(): Promise<void>;
  stop(): Promise<void>;
  sendRequest(method: string, params: unknown): Promise<unknown>;
}

export type ClientFactory = (settings: CtxSettings) => LspClient;

export class Controller implements vscode.Disposable {
  readonly output: vscode.OutputChannel;
  readonly item: vscode.StatusBarItem;
  state: DaemonState = { kind: 'stopped' };
  private client: LspClient | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly factory: ClientFactory) {
    this.output = vscode.window.createOutputChannel('ctx');
    this.item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 0);
    this.item.command = 'ctx.showStatus';
    this.setState({ kind: 'stopped' });
    this.item.show();
  }

  settings(): CtxSettings {
    const c = vscode.workspace.getConfiguration('ctx');
    return readSettings((k) => c.get(k));
  }

  private setState(s: DaemonState): void {
    this.state = s;
    const { text, tooltip } = statusBar(s);
    this.item.text = text;
    this.item.tooltip = tooltip;
  }

  /** Start the language server, then ask for the daemon's state (which starts ctxd if needed). */
  async start(): Promise<void> {
    const settings = this.settings();
    this.setState({ kind: 'starting' });
    const client = this.factory(settings);
    this.client = client;
    try {
      await client.start();
    } catch (e) {
      this.client = undefined;
      const msg = `cannot start ${settings.path} lsp: ${errorMessage(e)}`;
      this.output.appendLine(msg);
      this.setState({ kind: 'error', message: msg });
      return;
    }
    await this.refresh(false);
    if (settings.statusIntervalSeconds > 0) {
      this.timer = setInterval(() => void this.refresh(false), settings.statusIntervalSeconds * 1000);
      this.timer.unref?.();
    }
  }

  /** Run ctx.status; with `show`, print the result in the output channel (and errors as messages). */
  async refresh(show: boolean): Promise<StatusResult | undefined> {
    if (!this.client) {
      await this.start();
      if (!this.client) {
        if (show) {
          this.output.show(true);
          void vscode.window.showErrorMessage(`ctx: ${this.state.kind === 'error' ? this.state.message : 'not running'}`);
        }
        return undefined;
      }
      if (!show) return this.state.kind === 'up' ? this.state.status : undefined;
    }
    try {
      const r = parseStatus(await this.client.sendRequest('workspace/executeCommand', statusRequest()));
      this.setState({ kind: 'up', status: r });
      if (show) {
        this.output.appendLine(`--- ctx status (${new Date().toISOString()})`);
        for (const line of formatStatus(r)) this.output.appendLine(line);
        this.output.show(true);
      }
      return r;
    } catch (e) {
      const msg = errorMessage(e);
      this.setState({ kind: 'error', message: msg });
      if (show) {
        this.output.appendLine(`ctx status failed: ${msg}`);
        this.output.show(true);
        void vscode.window.showErrorMessage(`ctx status: ${msg}`);
      }
      return undefined;
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const c = this.client;
    this.client = undefined;
    this.setState({ kind: 'stopped' });
    if (c) {
      try {
        await c.stop();
      } catch (e) {
        this.output.appendLine(`stopping ctx lsp: ${errorMessage(e)}`);
      }
    }
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  dispose(): void {
    void this.stop();
    this.item.dispose();
    this.output.dispose();
  }
}

/** Wire the controller into VS Code: commands, configuration changes, first start. */
export function activateWith(context: vscode.ExtensionContext, factory: ClientFactory): Controller {
  const c = new Controller(factory);
  context.subscriptions.push(
    c,
    vscode.commands.registerCommand('ctx.showStatus', () => c.refresh(true)),
    vscode.commands.registerCommand('ctx.restart', () => c.restart()),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('ctx')) void c.restart();
    }),
  );
  void c.start();
  return c;
}
