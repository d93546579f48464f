// N-API glue for memfd_create and seals (native/memfd.h). The Promise forms
// of the seal calls act on a copy of the caller's fd made when the call is
// made (FdArgs).
#include "memfd.h"
#include "napi_util.h"

namespace lu::napi {
namespace {

Call<NewFd> PrepareMemfdCreate(const Napi::CallbackInfo& info, FdArgs) {
  std::string name = ArgString(info, 0, "name");
  auto flags = static_cast<unsigned>(ArgInt32(info, 1, "flags"));
  return {"memfd_create", [name, flags](NewFd& out) { return out.Adopt(memfd_create(name.c_str(), flags)); }};
}

Call<int> PrepareAddSeals(const Napi::CallbackInfo& info, FdArgs fds) {
  int fd = ArgFd(info, 0, "fd");
  int seals = ArgInt32(info, 1, "seals");
  fd = fds.Use(info.Env(), fd, "fcntl");
  return {"fcntl", [fd, seals](int&) { return add_seals(fd, seals); }, std::move(fds)};
}

Call<int> PrepareGetSeals(const Napi::CallbackInfo& info, FdArgs fds) {
  int fd = ArgFd(info, 0, "fd");
  fd = fds.Use(info.Env(), fd, "fcntl");
  return {"fcntl", [fd](int& seals) { return seals = get_seals(fd); }, std::move(fds)};
}

}  // namespace

void RegisterMemfd(Napi::Env env, Napi::Object exports) {
  ExportCall<NewFd, PrepareMemfdCreate>(env, exports, "memfdCreate");
  ExportCall<int, PrepareAddSeals>(env, exports, "addSeals");
  ExportCall<int, PrepareGetSeals>(env, exports, "getSeals");
}

}  // namespace lu::napi
