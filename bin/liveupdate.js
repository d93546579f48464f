#!/usr/bin/env node
'use strict';
// The agent's commands resolve to their exit status; the others return it.
// An absolute require, as in dist/ (see scripts/absolute-requires.mjs): node resolves it without running its package-name pattern.
Promise.resolve(require(__dirname + '/../dist/cli.js').main(process.argv.slice(2))).then((status) => {
  process.exitCode = status;
});
