// Bundles the playground into src/overture/api/../playground (or the directory given), byte for byte
// the same on every machine: tests/test_playground.py rebuilds it and compares with what is committed.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "..", "src", "overture", "playground"));
mkdirSync(out, { recursive: true });

await build({
  entryPoints: { app: join(here, "src", "main.ts") },
  bundle: true,
  format: "esm",
  minify: true,
  target: ["chrome120", "firefox120", "safari17"],
  outdir: out,
  legalComments: "eof",
  logLevel: "warning",
});
copyFileSync(join(here, "index.html"), join(out, "index.html"));
