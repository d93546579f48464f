// The test bed's addon: N-API glue for the few syscalls a test guest's /init
// needs and Node lacks (native/guest.h). It shares the library's N-API helpers
// (napi_util.h, from the installed liveupdate package: see binding.gyp).
#include "guest.h"
#include "napi_util.h"

#include <cerrno>

namespace lu::napi {
namespace {

Call<int> PrepareMount(const Napi::CallbackInfo& info, FdArgs) {
  std::string source = ArgString(info, 0, "source");
  std::string target = ArgString(info, 1, "target");
  std::string fstype = ArgString(info, 2, "fstype");
  // MS_* flags all fit in 32 bits; read as unsigned so MS_* high bits survive.
  auto flags = static_cast<unsigned long>(static_cast<uint32_t>(ArgInt32(info, 3, "flags")));
  bool has_data = info.Length() > 4 && !info[4].IsUndefined() && !info[4].IsNull();
  std::string data = has_data ? ArgString(info, 4, "data") : std::string();
  return {"mount", [source, target, fstype, flags, has_data, data](int&) {
            return mount_fs(source, target, fstype, flags, has_data ? data.c_str() : nullptr);
          }};
}

Call<int> PreparePowerOff(const Napi::CallbackInfo&, FdArgs) {
  return {"reboot", [](int&) { return power_off(); }};
}

Call<int> PrepareSetRlimitNofile(const Napi::CallbackInfo& info, FdArgs) {
  int32_t soft = ArgInt32(info, 0, "soft");
  int32_t hard = ArgInt32(info, 1, "hard");
  return {"setrlimit", [soft, hard](int&) {
            if (soft < 0 || hard < 0) return -EINVAL;
            return set_rlimit_nofile(static_cast<unsigned long>(soft), static_cast<unsigned long>(hard));
          }};
}

constexpr Export kExports[] = {
    SyncAndAsyncCall<int, PrepareMount>("mount", "mountAsync"),
    SyncAndAsyncCall<int, PreparePowerOff>("powerOff", "powerOffAsync"),
    SyncAndAsyncCall<int, PrepareSetRlimitNofile>("setrlimitNofile", "setrlimitNofileAsync"),
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  DefineExports(env, exports, kExports);
  return exports;
}

}  // namespace
}  // namespace lu::napi

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return lu::napi::Init(env, exports);
}

NODE_API_MODULE(liveupdate_guest, InitModule)
