// N-API glue for the LUO ioctls (native/luo.h). Each Prepare* reads the JS
// arguments into a Call; ExportCall makes its sync and Promise forms.
#include "luo.h"
#include "napi_util.h"

namespace lu::napi {
namespace {

Call<int> PrepareOpenDevice(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  return {"open", [path](int& fd) { return fd = open_device(path.c_str()); }};
}

Call<int> PrepareCreateSession(const Napi::CallbackInfo& info) {
  int device = ArgInt32(info, 0, "deviceFd");
  std::string name = ArgString(info, 1, "name");
  return {"ioctl", [device, name](int& fd) { return fd = create_session(device, name); }};
}

Call<int> PrepareRetrieveSession(const Napi::CallbackInfo& info) {
  int device = ArgInt32(info, 0, "deviceFd");
  std::string name = ArgString(info, 1, "name");
  return {"ioctl", [device, name](int& fd) { return fd = retrieve_session(device, name); }};
}

Call<int> PreparePreserveFd(const Napi::CallbackInfo& info) {
  int session = ArgInt32(info, 0, "sessionFd");
  int fd = ArgInt32(info, 1, "fd");
  uint64_t token = ArgUint64(info, 2, "token");
  return {"ioctl", [session, fd, token](int&) { return preserve_fd(session, fd, token); }};
}

Call<int> PrepareRetrieveFd(const Napi::CallbackInfo& info) {
  int session = ArgInt32(info, 0, "sessionFd");
  uint64_t token = ArgUint64(info, 1, "token");
  return {"ioctl", [session, token](int& fd) { return fd = retrieve_fd(session, token); }};
}

Call<int> PrepareFinishSession(const Napi::CallbackInfo& info) {
  int session = ArgInt32(info, 0, "sessionFd");
  return {"ioctl", [session](int&) { return finish_session(session); }};
}

Call<std::string> PrepareGetSessionName(const Napi::CallbackInfo& info) {
  int session = ArgInt32(info, 0, "sessionFd");
  return {"ioctl", [session](std::string& name) { return get_session_name(session, name); }};
}

Call<int> PrepareClose(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  // Never retried: after EINTR the fd is already gone on Linux.
  return {"close", [fd](int&) { return ::close(fd) < 0 ? -errno : 0; }};
}

}  // namespace

void RegisterLuo(Napi::Env env, Napi::Object exports) {
  ExportCall<int, PrepareOpenDevice>(env, exports, "openDevice");
  ExportCall<int, PrepareCreateSession>(env, exports, "createSession");
  ExportCall<int, PrepareRetrieveSession>(env, exports, "retrieveSession");
  ExportCall<int, PreparePreserveFd>(env, exports, "preserveFd");
  ExportCall<int, PrepareRetrieveFd>(env, exports, "retrieveFd");
  ExportCall<int, PrepareFinishSession>(env, exports, "finishSession");
  ExportCall<std::string, PrepareGetSessionName>(env, exports, "getSessionName");
  ExportCall<int, PrepareClose>(env, exports, "close");
}

}  // namespace lu::napi
