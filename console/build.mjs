// Builds the console into one folder, as the hub embeds it:
//   index.html                 (revalidated: it names the others)
//   app-<hash>.js, app-<hash>.css   (cached for good: their names change with them)
//   download-worker.js         (the service worker that saves downloads as
//                              they arrive; revalidated: its URL is fixed)
// and beside each a .gz and a .br, so that the hub sends them compressed
// without compressing at run time.
//
//   node build.mjs OUT_DIR
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs OUT_DIR");
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));

/** One script bundled and minified for the browser: its bytes. */
async function bundle(entry, extra = {}) {
  const built = await build({
    entryPoints: [join(here, entry)],
    bundle: true,
    minify: true,
    format: "iife",
    target: "es2020",
    platform: "browser",
    write: false,
    logLevel: "warning",
    ...extra,
  });
  return built.outputFiles[0].contents;
}

const script = await bundle("src/main.ts", { legalComments: "eof" });
const worker = await bundle("src/download-worker.ts");
const style = readFileSync(join(here, "src/style.css"));

const hash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 12);
const js = `app-${hash(script)}.js`;
const css = `app-${hash(style)}.css`;
const html = readFileSync(join(here, "src/index.html"), "utf8")
  .replace("{{script}}", `/console/${js}`)
  .replace("{{style}}", `/console/${css}`);

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const [name, bytes] of [
  ["index.html", Buffer.from(html)],
  [js, Buffer.from(script)],
  [css, style],
  ["download-worker.js", Buffer.from(worker)],
]) {
  writeFileSync(join(out, name), bytes);
  writeFileSync(join(out, `${name}.gz`), gzipSync(bytes, { level: 9 }));
  writeFileSync(
    join(out, `${name}.br`),
    brotliCompressSync(bytes, {
      params: {
        [constants.BROTLI_PARAM_QUALITY]: 11,
        [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
      },
    }),
  );
}
