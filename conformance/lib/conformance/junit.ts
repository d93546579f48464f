/**
 * The conformance report as JUnit XML (`--junit FILE`), the format CI systems
 * read: one testsuite per kernel, one testcase per case (classname: its
 * scenario). A failure is a `<failure>`, a skip (not applicable included) a
 * `<skipped>`; a deviation passes, and says what it deviated from in a
 * `deviation` property and in its output.
 * @internal
 */
import type { CaseReport, ConformanceReport } from './report.js';

/** The XML document for `report`, which took `elapsedMs`. */
export function junitXml(report: ConformanceReport, elapsedMs: number): string {
  const suite = `liveupdate-conformance ${report.kernel.release}`;
  const counts = `tests="${report.cases.length}" failures="${report.failed}" errors="0" skipped="${report.skipped}" time="${seconds(elapsedMs)}"`;
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<testsuites name="liveupdate-conformance" ${counts}>`,
    `  <testsuite name="${escape(suite)}" ${counts}>`,
    '    <properties>',
    `      <property name="kernel" value="${escape(report.kernel.path)}"/>`,
    `      <property name="release" value="${escape(report.kernel.release)}"/>`,
    `      <property name="deviations" value="${report.deviations}"/>`,
    '    </properties>',
    ...report.cases.map(testcase),
    '  </testsuite>',
    '</testsuites>',
    '',
  ].join('\n');
}

function testcase(c: CaseReport): string {
  const slash = c.name.indexOf('/');
  const head = `    <testcase classname="${escape(c.name.slice(0, slash))}" name="${escape(c.name.slice(slash + 1))}" time="${seconds(c.ms)}"`;
  const detail = escape(c.detail ?? '');
  switch (c.status) {
    case 'pass':
      return `${head}/>`;
    case 'fail':
      return `${head}>\n      <failure message="${detail}"/>\n    </testcase>`;
    case 'skip':
      return `${head}>\n      <skipped message="${detail}"/>\n    </testcase>`;
    case 'deviation':
      return [
        `${head}>`,
        `      <properties><property name="deviation" value="${detail}"/></properties>`,
        `      <system-out>deviation: ${detail}</system-out>`,
        '    </testcase>',
      ].join('\n');
  }
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(3);
}

/** Text safe in an XML attribute or element; characters XML 1.0 cannot carry are dropped. */
function escape(text: string): string {
  return text
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/\n/g, '&#10;');
}
