// Everything the extension does with VS Code, apart from constructing the LanguageClient (which
// extension.ts passes in as a factory), so that tests drive it with a stubbed `vscode` module.
import * as vscode from 'vscode';

import {
  AgentResult,
  CtxSettings,
  DaemonState,
  LspRange,
  askRequest,
  codeRequest,
  formatAnswer,
  reviewRequest,
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

  /** Run one of the server's agent commands and print the answer in the output channel. */
  async agent(title: string, params: { command: string; arguments: unknown[] }): Promise<AgentResult | undefined> {
    if (!this.client) await this.start();
    if (!this.client) {
      void vscode.window.showErrorMessage(`ctx: ${this.state.kind === 'error' ? this.state.message : 'not running'}`);
      return undefined;
    }
    try {
      const r = (await this.client.sendRequest('workspace/executeCommand', params)) as AgentResult;
      for (const line of formatAnswer(title, r ?? {})) this.output.appendLine(line);
      this.output.show(true);
      return r;
    } catch (e) {
      const msg = errorMessage(e);
      this.output.appendLine(`${title} failed: ${msg}`);
      void vscode.window.showErrorMessage(`ctx: ${msg}`);
      return undefined;
    }
  }

  /** The active editor's document and selection (the cursor's line when nothing is selected). */
  private selection(): { uri: string; range: LspRange; diagnostics: string[]; empty: boolean } | undefined {
    const ed = vscode.window.activeTextEditor;
    if (!ed) {
      void vscode.window.showErrorMessage('ctx: no active editor');
      return undefined;
    }
    const sel = ed.selection;
    const empty = sel.start.line === sel.end.line && sel.start.character === sel.end.character;
    const range: LspRange = {
      start: { line: sel.start.line, character: empty ? 0 : sel.start.character },
      end: empty ? { line: sel.start.line + 1, character: 0 } : { line: sel.end.line, character: sel.end.character },
    };
    const diagnostics = vscode.languages
      .getDiagnostics(ed.document.uri)
      .filter((d) => d.range.start.line <= range.end.line && d.range.end.line >= range.start.line)
      .map((d) => d.message);
    return { uri: ed.document.uri.toString(), range, diagnostics, empty };
  }

  async ask(): Promise<AgentResult | undefined> {
    const q = await vscode.window.showInputBox({ prompt: 'Ask ctx about the repository', ignoreFocusOut: true });
    if (!q) return undefined;
    const s = vscode.window.activeTextEditor ? this.selection() : undefined;
    return this.agent(`ctx: ${q}`, askRequest(q, s && !s.empty ? s.uri : undefined, s && !s.empty ? s.range : undefined));
  }

  async code(command: 'ctx.explain' | 'ctx.fix'): Promise<AgentResult | undefined> {
    const s = this.selection();
    if (!s) return undefined;
    return this.agent(command === 'ctx.fix' ? 'ctx: Fix' : 'ctx: Explain', codeRequest(command, s.uri, s.range, s.diagnostics));
  }

  async review(): Promise<AgentResult | undefined> {
    const ed = vscode.window.activeTextEditor;
    if (!ed) {
      void vscode.window.showErrorMessage('ctx: no active editor');
      return undefined;
    }
    return this.agent('ctx: Review', reviewRequest(ed.document.uri.toString()));
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
    // The server's own commands (ctx.ask, ctx.review, ...) are registered by the language client
    // and take LSP arguments; these are the editor-facing ones that gather them.
    vscode.commands.registerCommand('ctx.askQuestion', () => c.ask()),
    vscode.commands.registerCommand('ctx.reviewFile', () => c.review()),
    vscode.commands.registerCommand('ctx.explainSelection', () => c.code('ctx.explain')),
    vscode.commands.registerCommand('ctx.fixSelection', () => c.code('ctx.fix')),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('ctx')) void c.restart();
    }),
  );
  void c.start();
  return c;
}
