// N-API glue for passing fds over Unix sockets (filled in by the fd-passing work).
#include "napi_util.h"

namespace lu::napi {
void RegisterFdPass(Napi::Env, Napi::Object) {}
}  // namespace lu::napi
