// Prints the SDK's size bundled, minified and gzipped (the budget is 10 KB), using esbuild.
import { buildSync } from "esbuild";
import { gzipSync } from "node:zlib";

const out = buildSync({ entryPoints: ["src/index.js"], bundle: true, minify: true, format: "esm", write: false,
                        target: "es2022" });
const code = out.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 }).length;
const budget = 10 * 1024;
console.log(`@gifting/client: ${code.length} bytes minified, ${gz} bytes gzipped (budget ${budget})`);
if (gz > budget) {
  console.error("over the 10 KB budget");
  process.exit(1);
}
