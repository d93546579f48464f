{
  "targets": [
    {
      "target_name": "liveupdate",
      "sources": [
        "native/addon.cc",
        "native/napi_util.cc",
        "native/luo.cc",
        "native/napi_luo.cc",
        "native/memfd.cc",
        "native/napi_memfd.cc",
        "native/kexec.cc",
        "native/napi_kexec.cc",
        "native/fdpass.cc",
        "native/napi_fdpass.cc",
        "native/peercred.cc",
        "native/napi_peercred.cc",
        "native/abi_check.cc"
      ],
      # C++ exceptions, as node-addon-api itself defines them (its
      # include dir, NAPI_CPP_EXCEPTIONS, NODE_ADDON_API_CPP_EXCEPTIONS_ALL,
      # no -fno-exceptions): the same target as the test bed's addon.
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except_all"],
      "include_dirs": ["include"],
      # The completion of a thread-pool call may run while an environment is
      # torn down, when no JS error can be thrown (native/napi_util.h). The
      # sources' digest (scripts/addon-digest.mjs, run in this directory),
      # which lib/native.ts checks at load against its JavaScript's.
      "defines": ["NAPI_VERSION=8", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "LIVEUPDATE_SOURCE_DIGEST=<!(node scripts/addon-digest.mjs)"],
      "cflags_cc!": ["-std=gnu++17"],
      # Hidden visibility: the addon exports only napi_register_module_v1, so
      # its calls to its own functions are bound at link time instead of each
      # being looked up through node's symbol table at load and first call
      # (169 symbol relocations instead of 318; measured under emulation, the
      # load and first calls about 10 ms faster in a fresh guest). -z now and
      # --gc-sections measured no faster.
      "cflags_cc": ["-std=c++20", "-Wall", "-Wextra", "-Werror=return-type", "-fvisibility=hidden", "-fvisibility-inlines-hidden"]
    }
  ]
}
