// N-API glue for SO_PEERCRED and SO_PEERGROUPS (native/peercred.h).
#include "napi_util.h"
#include "peercred.h"

namespace lu {

// Found by argument-dependent lookup when RunSync turns the result into
// a JS value: { pid, uid, gid, groups }. The result owns nothing to hand over.
inline void HandOver(PeerCredentials&) {}

Napi::Value ToJs(Napi::Env env, const PeerCredentials& cred) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", Napi::Number::New(env, cred.pid));
  out.Set("uid", Napi::Number::New(env, cred.uid));
  out.Set("gid", Napi::Number::New(env, cred.gid));
  Napi::Array groups = Napi::Array::New(env, cred.groups.size());
  for (size_t i = 0; i < cred.groups.size(); ++i) groups.Set(static_cast<uint32_t>(i), Napi::Number::New(env, cred.groups[i]));
  out.Set("groups", groups);
  return out;
}

}  // namespace lu

namespace lu::napi {
namespace {

Call<PeerCredentials> PreparePeerCredentials(const Napi::CallbackInfo& info, FdArgs fds) {
  int fd = ArgFd(info, 0, "fd");
  fd = fds.Use(info.Env(), fd, "getsockopt");
  return {"getsockopt", [fd](PeerCredentials& out) { return peer_credentials(fd, out); }, std::move(fds)};
}

constexpr Export kExports[] = {
    SyncAndAsyncCall<PeerCredentials, PreparePeerCredentials>("peerCredentials", "peerCredentialsAsync"),
};

}  // namespace

void RegisterPeerCred(Napi::Env env, Napi::Object exports) { DefineExports(env, exports, kExports); }

}  // namespace lu::napi
