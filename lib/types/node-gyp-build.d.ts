// node-gyp-build ships no types: it returns the addon found under `dir`.
declare module 'node-gyp-build' {
  function load(dir: string): unknown;
  export = load;
}
