// N-API glue for memfd_create, seals and hole punching (native/memfd.h). The
// Promise forms of the calls on an fd act on a copy of the caller's fd made
// when the call is made (FdArgs).
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

// An offset or length as fallocate's signed 64-bit off_t.
int64_t ArgOffset(const Napi::CallbackInfo& info, size_t index, const char* name) {
  uint64_t value = ArgUint64(info, index, name);
  if (value > static_cast<uint64_t>(INT64_MAX)) ThrowArgRange(info.Env(), name, ">= 0n and <= 2n ** 63n - 1n");
  return static_cast<int64_t>(value);
}

Call<int> PreparePunchHole(const Napi::CallbackInfo& info, FdArgs fds) {
  int fd = ArgFd(info, 0, "fd");
  int64_t offset = ArgOffset(info, 1, "offset");
  int64_t length = ArgOffset(info, 2, "length");
  fd = fds.Use(info.Env(), fd, "fallocate");
  return {"fallocate", [fd, offset, length](int&) { return punch_hole(fd, offset, length); }, std::move(fds)};
}

constexpr Export kExports[] = {
    SyncAndAsyncCall<NewFd, PrepareMemfdCreate>("memfdCreate", "memfdCreateAsync"),
    SyncAndAsyncCall<int, PrepareAddSeals>("addSeals", "addSealsAsync"),
    SyncAndAsyncCall<int, PrepareGetSeals>("getSeals", "getSealsAsync"),
    SyncAndAsyncCall<int, PreparePunchHole>("punchHole", "punchHoleAsync"),
};

}  // namespace

void RegisterMemfd(Napi::Env env, Napi::Object exports) { DefineExports(env, exports, kExports); }

}  // namespace lu::napi
