// N-API glue for the LUO ioctls (native/luo.h). Each Prepare* reads the JS
// arguments into a Call; its line in kExports makes its sync and Promise
// forms. A Promise form's fd arguments are copied when the call is made
// (FdArgs), so the queued ioctl acts on the session or file the caller
// named then.
#include <cerrno>
#include <vector>

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

// The fds of a batch of RETRIEVE_FD, one per token, in order. All or
// nothing: where one fails, those already retrieved are closed (LUO gives a
// token's file again to a later retrieve, so nothing is lost) and the result
// says which token failed and why, for the TypeScript layer to name it.
struct RetrievedFds {
  std::vector<UniqueFd> fds;
  size_t failed_at = 0;
  int error = 0;  // The failed ioctl's errno; 0 when every token was retrieved.
};

// An Array of the fds, or { index, errno } (errno negative, as Node's) of the token that failed.
Napi::Value ToJs(Napi::Env env, const RetrievedFds& value) {
  if (value.error != 0) {
    Napi::Object failure = Napi::Object::New(env);
    failure.Set("index", Napi::Number::New(env, static_cast<double>(value.failed_at)));
    failure.Set("errno", Napi::Number::New(env, -value.error));
    return failure;
  }
  Napi::Array fds = Napi::Array::New(env, value.fds.size());
  for (size_t i = 0; i < value.fds.size(); ++i) fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, value.fds[i].get()));
  return fds;
}

void HandOver(RetrievedFds& value) {
  for (UniqueFd& fd : value.fds) fd.release();
}

Call<RetrievedFds> PrepareRetrieveFds(const Napi::CallbackInfo& info, FdArgs fds) {
  int session = ArgFd(info, 0, "sessionFd");
  std::vector<uint64_t> tokens = ArgBigUint64Array(info, 1, "tokens");
  session = fds.Use(info.Env(), session, "ioctl");
  return {"ioctl",
          [session, tokens = std::move(tokens)](RetrievedFds& out) {
            out.fds.reserve(tokens.size());
            for (size_t i = 0; i < tokens.size(); ++i) {
              int rc = retrieve_fd(session, tokens[i]);
              if (rc < 0) {
                out.fds.clear();
                out.failed_at = i;
                out.error = -rc;
                break;
              }
              out.fds.emplace_back(rc);
            }
            return 0;
          },
          std::move(fds)};
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
    SyncAndAsyncCall<RetrievedFds, PrepareRetrieveFds>("retrieveFds", "retrieveFdsAsync"),
    SyncAndAsyncCall<int, PrepareFinishSession>("finishSession", "finishSessionAsync"),
    SyncAndAsyncCall<std::string, PrepareGetSessionName>("getSessionName", "getSessionNameAsync"),
    // Synchronous only: a deferred close of a number could close whatever
    // file has that number by the time it runs.
    SyncCall<int, PrepareClose>("close"),
};

}  // namespace

void RegisterLuo(Napi::Env env, Napi::Object exports) { DefineExports(env, exports, kExports); }

}  // namespace lu::napi
