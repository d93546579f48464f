// Writes README.md's error tables from the code's tables (lib/errors.ts,
// compiled into dist/): between the markers <!-- errors:kernel --> ...
// <!-- /errors:kernel --> and <!-- errors:package --> ... <!-- /errors:package -->.
// Run after `npm run build:ts`; test/errors.test.ts fails when README.md is out of step.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';

const require = createRequire(import.meta.url);
const { renderErrorTables, replaceErrorTables } = require('../dist/errors.js');
const file = new URL('../README.md', import.meta.url);
writeFileSync(file, replaceErrorTables(readFileSync(file, 'utf8'), renderErrorTables()));
