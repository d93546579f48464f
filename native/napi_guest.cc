// N-API glue for the few syscalls the test guest's /init needs (filled in by the test-bed work).
#include "napi_util.h"

namespace lu::napi {
void RegisterGuest(Napi::Env, Napi::Object) {}
}  // namespace lu::napi
