// N-API glue for kexec_file_load and reboot(KEXEC) (native/kexec.h).
#include "kexec.h"
#include "napi_util.h"

namespace lu::napi {
namespace {

Call<int> PrepareKexecLoad(const Napi::CallbackInfo& info, FdArgs) {
  std::string kernel = ArgString(info, 0, "kernel");
  bool has_initrd = info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull();
  std::string initrd = has_initrd ? ArgString(info, 1, "initrd") : std::string();
  std::string cmdline = ArgString(info, 2, "cmdline");
  return {"kexec_file_load", [kernel, has_initrd, initrd, cmdline](int&) {
            return kexec_load(kernel.c_str(), has_initrd ? initrd.c_str() : nullptr, cmdline);
          }};
}

Call<int> PrepareKexecUnload(const Napi::CallbackInfo&, FdArgs) {
  return {"kexec_file_load", [](int&) { return kexec_unload(); }};
}

Call<int> PrepareKexecLoaded(const Napi::CallbackInfo&, FdArgs) {
  return {"open", [](int& loaded) { return loaded = kexec_loaded(); }};
}

Call<int> PrepareKexecFileProbe(const Napi::CallbackInfo&, FdArgs) {
  return {"kexec_file_load", [](int&) { return kexec_file_probe(); }};
}

Call<int> PrepareKexecExecute(const Napi::CallbackInfo& info, FdArgs) {
  bool sync_first = ArgBool(info, 0, "sync");
  return {"reboot", [sync_first](int&) { return kexec_execute(sync_first); }};
}

}  // namespace

void RegisterKexec(Napi::Env env, Napi::Object exports) {
  ExportCall<int, PrepareKexecLoad>(env, exports, "kexecLoad");
  ExportCall<int, PrepareKexecUnload>(env, exports, "kexecUnload");
  ExportCall<int, PrepareKexecLoaded>(env, exports, "kexecLoaded");
  ExportCall<int, PrepareKexecFileProbe>(env, exports, "kexecFileProbe");
  ExportCall<int, PrepareKexecExecute>(env, exports, "kexecExecute");
}

}  // namespace lu::napi
