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
        "native/abi_check.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "include"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++20", "-fexceptions", "-Wall", "-Wextra", "-Werror=return-type"]
    }
  ]
}
