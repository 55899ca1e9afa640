// A stand-in for the `vscode` module (which exists only inside VS Code): just the API the
// controller touches, recording what it is asked to do. Installed by hooking require().
import Module = require('module');

export class FakeOutput {
  lines: string[] = [];
  shown = 0;
  disposed = false;
  constructor(readonly name: string) {}
  appendLine(l: string): void {
    this.lines.push(l);
  }
  show(): void {
    this.shown++;
  }
  dispose(): void {
    this.disposed = true;
  }
}

export class FakeItem {
  text = '';
  tooltip: string | undefined;
  command: string | undefined;
  visible = false;
  disposed = false;
  constructor(readonly alignment: number, readonly priority: number) {}
  show(): void {
    this.visible = true;
  }
  dispose(): void {
    this.disposed = true;
  }
}

export const fake = {
  outputs: [] as FakeOutput[],
  items: [] as FakeItem[],
  errors: [] as string[],
  inputs: [] as (string | undefined)[],
  editor: undefined as unknown,
  diagnostics: [] as { message: string; range: { start: { line: number }; end: { line: number } } }[],
  commands: new Map<string, (...a: unknown[]) => unknown>(),
  config: {} as Record<string, unknown>,
  configListeners: [] as ((e: { affectsConfiguration(s: string): boolean }) => void)[],
  reset(): void {
    this.outputs = [];
    this.items = [];
    this.errors = [];
    this.inputs = [];
    this.editor = undefined;
    this.diagnostics = [];
    this.commands.clear();
    this.config = {};
    this.configListeners = [];
  },
};

const disposable = (f: () => void = () => {}) => ({ dispose: f });

export const vscodeStub = {
  StatusBarAlignment: { Left: 1, Right: 2 },
  window: {
    createOutputChannel(name: string) {
      const o = new FakeOutput(name);
      fake.outputs.push(o);
      return o;
    },
    createStatusBarItem(alignment: number, priority: number) {
      const i = new FakeItem(alignment, priority);
      fake.items.push(i);
      return i;
    },
    showErrorMessage(msg: string) {
      fake.errors.push(msg);
      return Promise.resolve(undefined);
    },
    showInputBox() {
      return Promise.resolve(fake.inputs.shift());
    },
    get activeTextEditor() {
      return fake.editor;
    },
  },
  languages: {
    getDiagnostics() {
      return fake.diagnostics;
    },
  },
  commands: {
    registerCommand(id: string, fn: (...a: unknown[]) => unknown) {
      if (fake.commands.has(id)) throw new Error(`command '${id}' already exists`);
      fake.commands.set(id, fn);
      return disposable(() => fake.commands.delete(id));
    },
  },
  workspace: {
    getConfiguration(section: string) {
      return {
        get: (k: string) => (section === 'ctx' ? fake.config[k] : undefined),
      };
    },
    onDidChangeConfiguration(l: (e: { affectsConfiguration(s: string): boolean }) => void) {
      fake.configListeners.push(l);
      return disposable();
    },
  },
};

const M = Module as unknown as { _load: (req: string, parent: unknown, isMain: boolean) => unknown };
const load = M._load;
M._load = function (req: string, parent: unknown, isMain: boolean) {
  if (req === 'vscode') return vscodeStub;
  return load.call(this, req, parent, isMain);
};
