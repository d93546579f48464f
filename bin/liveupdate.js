#!/usr/bin/env node
'use strict';
// The agent's commands resolve to their exit status; the others return it.
Promise.resolve(require('../dist/cli.js').main(process.argv.slice(2))).then((status) => {
  process.exitCode = status;
});
