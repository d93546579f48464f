#!/usr/bin/env node
'use strict';
// Thin launcher: the command lives in dist/conformance/cli.js (compiled TypeScript).
require('../dist/conformance/cli.js')
  .main(process.argv.slice(2))
  .then(
    (status) => {
      process.exitCode = status;
    },
    (error) => {
      process.stderr.write(`liveupdate-conformance: ${error && error.stack ? error.stack : String(error)}\n`);
      process.exitCode = 2;
    },
  );
