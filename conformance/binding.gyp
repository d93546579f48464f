{
  # The test bed's own addon: the syscalls a guest's /init needs. It builds
  # against the library's N-API helpers (native/napi_util.*), which the
  # installed liveupdate package ships.
  "variables": {
    "liveupdate_native": "<!(node -p \"require('node:path').relative('.', require('node:path').join(require('node:path').dirname(require.resolve('liveupdate/package.json')), 'native'))\")"
  },
  "targets": [
    {
      "target_name": "liveupdate_guest",
      "sources": [
        "native/napi_guest.cc",
        "native/guest.cc",
        "<(liveupdate_native)/napi_util.cc"
      ],
      # The library's addon takes the same node-addon-api target: one
      # definition of the exception flags for both.
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except_all"],
      "include_dirs": ["<(liveupdate_native)"],
      "defines": ["NAPI_VERSION=8", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc!": ["-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-Wall", "-Wextra", "-Werror=return-type"]
    }
  ]
}
