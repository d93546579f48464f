// addon.cc - the module's entry point: each glue file adds its functions.
#include "napi_util.h"

extern "C" const char lu_abi_checked_against[];

namespace lu::napi {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  RegisterLuo(env, exports);
  RegisterMemfd(env, exports);
  RegisterKexec(env, exports);
  RegisterFdPass(env, exports);
  // Which system header the ABI was compared with at build time ("" if none).
  exports.Set("abiCheckedAgainst", Napi::String::New(env, lu_abi_checked_against));
  return exports;
}

}  // namespace lu::napi

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return lu::napi::Init(env, exports);
}

NODE_API_MODULE(liveupdate, InitModule)
