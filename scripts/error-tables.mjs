// README.md's two error tables, as markdown, rendered from the code's tables
// (kernelErrors() and packageErrors() of lib/errors.ts), and put between the
// README's markers. Not shipped: write-error-table.mjs runs it on dist/, and
// test/readme.test.ts on the sources, so README.md cannot drift from the code.

/** A class's name as the README writes it. */
function className(type) {
  return `\`${type.name}\``;
}

function list(items, any) {
  return items === '*' ? any : items.map((i) => `\`${i}\``).join(', ');
}

/** The kernel table (class, operation, errno, meaning) and the package table (class, code, when). */
export function renderErrorTables({ KERNEL_ERRORS, PACKAGE_ERRORS }) {
  const kernel = [
    '| class | operation | errno | meaning |',
    '|---|---|---|---|',
    ...KERNEL_ERRORS.map((r) => `| ${className(r.type)} | ${list(r.operations, 'any')} | ${list(r.codes, 'any other')} | ${r.meaning} |`),
  ].join('\n');
  const pkg = ['| class | code | when |', '|---|---|---|', ...PACKAGE_ERRORS.map((r) => `| ${className(r.type)} | \`${r.code}\` | ${r.meaning} |`)].join('\n');
  return { kernel, package: pkg };
}

/**
 * `readme` with the text between each table's markers (<!-- errors:NAME -->
 * ... <!-- /errors:NAME -->) replaced. Throws if a marker is missing, so
 * that a moved marker cannot go unnoticed.
 */
export function replaceErrorTables(readme, tables) {
  let out = readme;
  for (const [name, table] of Object.entries(tables)) {
    const begin = `<!-- errors:${name} -->`;
    const end = `<!-- /errors:${name} -->`;
    const from = out.indexOf(begin);
    const to = out.indexOf(end);
    if (from < 0 || to < from) throw new Error(`README.md lacks the markers ${begin} ... ${end}`);
    out = `${out.slice(0, from + begin.length)}\n${table}\n${out.slice(to)}`;
  }
  return out;
}
