// addon.cc - the module's entry point: each glue file adds its functions.
#include "napi_util.h"

extern "C" const char lu_abi_checked_against[];

// The digest of the sources this was built from (scripts/addon-digest.mjs),
// given by the build as a bare token, so that no shell quoting is involved.
#ifndef LIVEUPDATE_SOURCE_DIGEST
#error "LIVEUPDATE_SOURCE_DIGEST: build with binding.gyp or CMakeLists.txt, which define it"
#endif
#define LU_STRINGIFY_(x) #x
#define LU_STRINGIFY(x) LU_STRINGIFY_(x)
#define LU_DIGEST_MARKER "liveupdate-source-digest="
// One string with its marker before the digest, so that a script can read it
// from a prebuild of another architecture without loading it; the export
// points into it, which also keeps it in the binary.
static constexpr char kMarkedSourceDigest[] = LU_DIGEST_MARKER LU_STRINGIFY(LIVEUPDATE_SOURCE_DIGEST);

namespace lu::napi {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  RegisterLuo(env, exports);
  RegisterMemfd(env, exports);
  RegisterKexec(env, exports);
  RegisterFdPass(env, exports);
  RegisterPeerCred(env, exports);
  // Which system header the ABI was compared with at build time ("" if none).
  exports.Set("abiCheckedAgainst", Napi::String::New(env, lu_abi_checked_against));
  // What lib/native.ts compares with the digest its JavaScript was built with.
  exports.Set("sourceDigest", Napi::String::New(env, kMarkedSourceDigest + sizeof(LU_DIGEST_MARKER) - 1));
  return exports;
}

}  // namespace lu::napi

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return lu::napi::Init(env, exports);
}

NODE_API_MODULE(liveupdate, InitModule)
