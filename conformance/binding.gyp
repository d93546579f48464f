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
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<(liveupdate_native)"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-fexceptions", "-Wall", "-Wextra", "-Werror=return-type"]
    }
  ]
}
