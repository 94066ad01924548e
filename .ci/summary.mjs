// Prints "N passed, N failed[, N skipped]" from vitest's JSON report; exits 1 on any failure
// or when the report is missing (the test command did not get as far as running tests).
import { readFileSync } from 'node:fs';

const file = process.argv[2] ?? '.vitest-report.json';
// Further arguments `name:0` / `name:1`: checks run outside vitest (the torture runs), counted as
// one passed or failed test each.
const extra = process.argv.slice(3).map((a) => { const i = a.lastIndexOf(':'); return { name: a.slice(0, i), failed: a.slice(i + 1) !== '0' }; });
let report;
try {
  report = JSON.parse(readFileSync(file, 'utf8'));
} catch (err) {
  console.log('0 passed, 1 failed');
  console.error(`ci: no test report (${err.message})`);
  process.exit(1);
}
const passed = (report.numPassedTests ?? 0) + extra.filter((e) => !e.failed).length;
const failed = extra.filter((e) => e.failed).length + (report.numFailedTests ?? 0) + (report.numRuntimeErrorTestSuites ?? 0) + (report.numFailedTestSuites && !report.numFailedTests ? report.numFailedTestSuites : 0);
const skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
for (const suite of report.testResults ?? []) {
  for (const t of suite.assertionResults ?? []) {
    if (t.status !== 'failed') continue;
    console.log(`FAILED: ${suite.name.replace(process.cwd() + '/', '')} > ${t.fullName}`);
    // The assertion and where it failed, so a failure seen only in CI can be read from its log.
    const msg = String((t.failureMessages ?? [])[0] ?? '').split('\n').filter((l) => l.trim() !== '').slice(0, 6);
    for (const l of msg) console.log(`  ${l.slice(0, 300)}`);
  }
  if (suite.status === 'failed' && (suite.assertionResults ?? []).length === 0) console.log(`FAILED: ${suite.name} (${suite.message ?? 'suite error'})`);
}
for (const e of extra) if (e.failed) console.log(`FAILED: ${e.name}`);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
