// N-API glue for memfd_create and seals (native/memfd.h).
#include "memfd.h"
#include "napi_util.h"

namespace lu::napi {
namespace {

Call<int> PrepareMemfdCreate(const Napi::CallbackInfo& info) {
  std::string name = ArgString(info, 0, "name");
  auto flags = static_cast<unsigned>(ArgInt32(info, 1, "flags"));
  return {"memfd_create", [name, flags](int& fd) { return fd = memfd_create(name.c_str(), flags); }};
}

Call<int> PrepareAddSeals(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  int seals = ArgInt32(info, 1, "seals");
  return {"fcntl", [fd, seals](int&) { return add_seals(fd, seals); }};
}

Call<int> PrepareGetSeals(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  return {"fcntl", [fd](int& seals) { return seals = get_seals(fd); }};
}

}  // namespace

void RegisterMemfd(Napi::Env env, Napi::Object exports) {
  ExportCall<int, PrepareMemfdCreate>(env, exports, "memfdCreate");
  ExportCall<int, PrepareAddSeals>(env, exports, "addSeals");
  ExportCall<int, PrepareGetSeals>(env, exports, "getSeals");
}

}  // namespace lu::napi
