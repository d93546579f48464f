// N-API glue for the LUO ioctls (native/luo.h). Each Prepare* reads the JS
// arguments into a Call; its line in kExports makes its sync and Promise
// forms. A Promise form's fd arguments are copied when the call is made
// (FdArgs), so the queued ioctl acts on the session or file the caller
// named then.
#include <cerrno>

#include "luo.h"
#include "napi_util.h"

namespace lu::napi {
namespace {

Call<NewFd> PrepareOpenDevice(const Napi::CallbackInfo& info, FdArgs) {
  std::string path = ArgString(info, 0, "path");
  return {"open", [path](NewFd& out) { return out.Adopt(open_device(path.c_str())); }};
}

Call<NewFd> PrepareCreateSession(const Napi::CallbackInfo& info, FdArgs fds) {
  int device = ArgFd(info, 0, "deviceFd");
  std::string name = ArgString(info, 1, "name");
  device = fds.Use(info.Env(), device, "ioctl");
  return {"ioctl", [device, name](NewFd& out) { return out.Adopt(create_session(device, name)); }, std::move(fds)};
}

Call<NewFd> PrepareRetrieveSession(const Napi::CallbackInfo& info, FdArgs fds) {
  int device = ArgFd(info, 0, "deviceFd");
  std::string name = ArgString(info, 1, "name");
  device = fds.Use(info.Env(), device, "ioctl");
  return {"ioctl", [device, name](NewFd& out) { return out.Adopt(retrieve_session(device, name)); }, std::move(fds)};
}

Call<int> PreparePreserveFd(const Napi::CallbackInfo& info, FdArgs fds) {
  int session = ArgFd(info, 0, "sessionFd");
  int fd = ArgFd(info, 1, "fd");
  uint64_t token = ArgUint64(info, 2, "token");
  fds.CheckOpen(info.Env(), {session, fd}, "ioctl");
  session = fds.Use(info.Env(), session, "ioctl");
  fd = fds.Use(info.Env(), fd, "ioctl");
  return {"ioctl", [session, fd, token](int&) { return preserve_fd(session, fd, token); }, std::move(fds)};
}

Call<NewFd> PrepareRetrieveFd(const Napi::CallbackInfo& info, FdArgs fds) {
  int session = ArgFd(info, 0, "sessionFd");
  uint64_t token = ArgUint64(info, 1, "token");
  session = fds.Use(info.Env(), session, "ioctl");
  return {"ioctl", [session, token](NewFd& out) { return out.Adopt(retrieve_fd(session, token)); }, std::move(fds)};
}

Call<int> PrepareFinishSession(const Napi::CallbackInfo& info, FdArgs fds) {
  int session = ArgFd(info, 0, "sessionFd");
  session = fds.Use(info.Env(), session, "ioctl");
  return {"ioctl", [session](int&) { return finish_session(session); }, std::move(fds)};
}

Call<std::string> PrepareGetSessionName(const Napi::CallbackInfo& info, FdArgs fds) {
  int session = ArgFd(info, 0, "sessionFd");
  session = fds.Use(info.Env(), session, "ioctl");
  return {"ioctl", [session](std::string& name) { return get_session_name(session, name); }, std::move(fds)};
}

Call<int> PrepareClose(const Napi::CallbackInfo& info, FdArgs) {
  int fd = ArgFd(info, 0, "fd");
  // Never retried: after EINTR the fd is already gone on Linux.
  return {"close", [fd](int&) { return ::close(fd) < 0 ? -errno : 0; }};
}

constexpr Export kExports[] = {
    SyncAndAsyncCall<NewFd, PrepareOpenDevice>("openDevice", "openDeviceAsync"),
    SyncAndAsyncCall<NewFd, PrepareCreateSession>("createSession", "createSessionAsync"),
    SyncAndAsyncCall<NewFd, PrepareRetrieveSession>("retrieveSession", "retrieveSessionAsync"),
    SyncAndAsyncCall<int, PreparePreserveFd>("preserveFd", "preserveFdAsync"),
    SyncAndAsyncCall<NewFd, PrepareRetrieveFd>("retrieveFd", "retrieveFdAsync"),
    SyncAndAsyncCall<int, PrepareFinishSession>("finishSession", "finishSessionAsync"),
    SyncAndAsyncCall<std::string, PrepareGetSessionName>("getSessionName", "getSessionNameAsync"),
    // Synchronous only: a deferred close of a number could close whatever
    // file has that number by the time it runs.
    SyncCall<int, PrepareClose>("close"),
};

}  // namespace

void RegisterLuo(Napi::Env env, Napi::Object exports) { DefineExports(env, exports, kExports); }

}  // namespace lu::napi
