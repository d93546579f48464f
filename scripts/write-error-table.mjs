// Writes README.md's error tables from the code's tables (lib/errors.ts,
// compiled into dist/): between the markers <!-- errors:kernel --> ...
// <!-- /errors:kernel --> and <!-- errors:package --> ... <!-- /errors:package -->.
// Run after `npm run build:ts` (npm run docs:errors does both); test/readme.test.ts
// fails when README.md is out of step.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { renderErrorTables, replaceErrorTables } from './error-tables.mjs';

const require = createRequire(import.meta.url);
const file = new URL('../README.md', import.meta.url);
const tablesOf = (errors) => ({ KERNEL_ERRORS: errors.kernelErrors(), PACKAGE_ERRORS: errors.packageErrors() });
writeFileSync(file, replaceErrorTables(readFileSync(file, 'utf8'), renderErrorTables(tablesOf(require('../dist/errors.js')))));
