// The VS Code entry points: a LanguageClient running `ctx lsp` on stdio, handed to the controller.
import * as vscode from 'vscode';
import { LanguageClient, LanguageClientOptions, ServerOptions } from 'vscode-languageclient/node';

import { Controller, activateWith } from './controller';
import { initializationOptions, serverCommand } from './logic';

let controller: Controller | undefined;

export function activate(context: vscode.ExtensionContext): void {
  controller = activateWith(context, (settings) => {
    const { command, args } = serverCommand(settings);
    // No transport given: stdio, and the client adds no --stdio argument of its own.
    const serverOptions: ServerOptions = { command, args };
    // The client library turns the server's capabilities into VS Code features: code actions,
    // inline completions (LSP 3.18 textDocument/inlineCompletion), diagnostics, applyEdit and
    // $/progress all come through it.
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      initializationOptions: initializationOptions(settings),
    };
    // The client logs to its own channel ("ctx language server"); answers go to "ctx".
    const lc = new LanguageClient('ctx', 'ctx language server', serverOptions, clientOptions);
    return {
      start: () => lc.start(),
      stop: () => lc.stop(),
      sendRequest: (method, params) => lc.sendRequest(method, params),
    };
  });
}

export async function deactivate(): Promise<void> {
  await controller?.stop();
  controller = undefined;
}
