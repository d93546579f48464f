// N-API glue for kexec_file_load and reboot(KEXEC) (native/kexec.h).
#include "kexec.h"
#include "napi_util.h"

namespace lu::napi {
namespace {

// kexecOpenImage(path): the fd of a regular file, opened without waiting
// (see kexec_open_image); EINVAL for anything else.
Call<NewFd> PrepareKexecOpenImage(const Napi::CallbackInfo& info, FdArgs) {
  std::string path = ArgString(info, 0, "path");
  return {"open", [path](NewFd& out) { return out.Adopt(kexec_open_image(path.c_str())); }};
}

// kexecLoad(kernelFd, initrdFd | null, cmdline).
Call<int> PrepareKexecLoad(const Napi::CallbackInfo& info, FdArgs fds) {
  int kernel_fd = ArgFd(info, 0, "kernelFd");
  bool has_initrd = info.Length() > 1 && !info[1].IsNull();
  int initrd_fd = has_initrd ? ArgFd(info, 1, "initrdFd") : -1;
  std::string cmdline = ArgString(info, 2, "cmdline");
  std::vector<int> all{kernel_fd};
  if (has_initrd) all.push_back(initrd_fd);
  fds.CheckOpen(info.Env(), all, "kexec_file_load");
  kernel_fd = fds.Use(info.Env(), kernel_fd, "kexec_file_load");
  if (has_initrd) initrd_fd = fds.Use(info.Env(), initrd_fd, "kexec_file_load");
  return {"kexec_file_load", [kernel_fd, initrd_fd, cmdline](int&) { return kexec_load(kernel_fd, initrd_fd, cmdline); }, std::move(fds)};
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

constexpr Export kExports[] = {
    SyncAndAsyncCall<NewFd, PrepareKexecOpenImage>("kexecOpenImage", "kexecOpenImageAsync"),
    SyncAndAsyncCall<int, PrepareKexecLoad>("kexecLoad", "kexecLoadAsync"),
    SyncAndAsyncCall<int, PrepareKexecUnload>("kexecUnload", "kexecUnloadAsync"),
    SyncAndAsyncCall<int, PrepareKexecLoaded>("kexecLoaded", "kexecLoadedAsync"),
    SyncAndAsyncCall<int, PrepareKexecFileProbe>("kexecFileProbe", "kexecFileProbeAsync"),
    SyncAndAsyncCall<int, PrepareKexecExecute>("kexecExecute", "kexecExecuteAsync"),
};

}  // namespace

void RegisterKexec(Napi::Env env, Napi::Object exports) { DefineExports(env, exports, kExports); }

}  // namespace lu::napi
