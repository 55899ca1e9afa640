#!/bin/sh
# editors/vscode: type-check and compile (tsc), run node's test runner (logic and controller on a
# stubbed vscode module; the protocol test against the real ctx lsp and ctxd), bundle with esbuild
# and package a .vsix with vsce, then check what the .vsix holds. Everything is written under the
# build tree. Skips (77) where `npm ci` has not been run. $1 = ctx, $2 = ctxd.
set -eu
src="${CTX_SOURCE_ROOT:?}/editors/vscode"
stage="${CTX_BUILD_ROOT:?}/editors/vscode"
bin="$src/node_modules/.bin"
if [ ! -x "$bin/tsc" ] || [ ! -x "$bin/esbuild" ] || [ ! -x "$bin/vsce" ] || ! command -v node >/dev/null 2>&1; then
    echo "SKIP: $src/node_modules is not installed (scripts/setup runs npm ci there)"
    exit 77
fi
rm -rf "$stage"
mkdir -p "$stage"
echo "== tsc"
"$bin/tsc" -p "$src" --outDir "$stage/out"
echo "== node --test"
# compiled tests resolve their packages from the source tree's node_modules
CTX_BIN="$1" CTXD_BIN="$2" NODE_PATH="$src/node_modules" node --test --test-reporter=spec "$stage"/out/test/*.test.js
echo "== esbuild"
"$bin/esbuild" "$src/src/extension.ts" --bundle --platform=node --target=node18 --format=cjs \
    --external:vscode --minify --log-level=warning --outfile="$stage/dist/extension.js"
cp "$src/package.json" "$src/README.md" "$src/LICENSE" "$src/.vscodeignore" "$stage/"
echo "== vsce package"
(cd "$stage" && "$bin/vsce" package --no-dependencies --allow-missing-repository --out ctx.vsix)
echo "== check the .vsix"
node - "$stage/ctx.vsix" <<'JS'
// A .vsix is a zip: list its central directory and check what must (not) be there.
const fs = require('fs');
const buf = fs.readFileSync(process.argv[2]);
const eocd = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
if (eocd < 0) throw new Error('not a zip');
let off = buf.readUInt32LE(eocd + 16);
const count = buf.readUInt16LE(eocd + 10);
const names = [];
for (let i = 0; i < count; i++) {
  if (buf.readUInt32LE(off) !== 0x02014b50) throw new Error('bad central directory');
  const nlen = buf.readUInt16LE(off + 28), xlen = buf.readUInt16LE(off + 30), clen = buf.readUInt16LE(off + 32);
  names.push({ name: buf.toString('utf8', off + 46, off + 46 + nlen), size: buf.readUInt32LE(off + 24) });
  off += 46 + nlen + xlen + clen;
}
const has = (n) => names.find((e) => e.name === n);
for (const n of ['extension.vsixmanifest', '[Content_Types].xml', 'extension/package.json', 'extension/dist/extension.js',
                 'extension/readme.md', 'extension/LICENSE.txt']) {
  if (!has(n) && !has(n.replace('readme.md', 'README.md')) && !has(n.replace('LICENSE.txt', 'LICENSE')))
    throw new Error(`${n} missing from the .vsix: ${names.map((e) => e.name).join(', ')}`);
}
const bad = names.filter((e) => /node_modules|\/src\/|\/out\//.test(e.name));
if (bad.length) throw new Error(`unexpected files: ${bad.map((e) => e.name).join(', ')}`);
const js = has('extension/dist/extension.js');
if (js.size < 100000) throw new Error(`the bundle is ${js.size} bytes: the client library is not in it`);
console.log(`ok: ${names.length} files, bundle ${js.size} bytes, vsix ${buf.length} bytes`);
JS
