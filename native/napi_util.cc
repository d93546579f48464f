#include "napi_util.h"

#include <uv.h>

#include <cstring>

namespace lu::napi {
namespace {

bool UvKnows(int err) { return std::strncmp(uv_err_name(-err), "Unknown", 7) != 0; }

// libuv's name where it has one: those are what Node's own system errors
// carry. libuv lacks some errnos the kernel returns here (kexec_file_load's
// ENOEXEC, EKEYREJECTED); glibc names those.
const char* ErrnoName(int err) {
  if (UvKnows(err)) return uv_err_name(-err);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  if (const char* name = strerrorname_np(err)) return name;
#endif
  return uv_err_name(-err);
}

// Only called on the JS thread, so strerror's static buffer is safe.
const char* ErrnoText(int err) { return UvKnows(err) ? uv_strerror(-err) : std::strerror(err); }

}  // namespace

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall) {
  const char* code = ErrnoName(err);
  std::string message = std::string(code) + ": " + ErrnoText(err) + ", " + syscall;
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("code", Napi::String::New(env, code));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

namespace {

Napi::Value Arg(const Napi::CallbackInfo& info, size_t index) {
  return index < info.Length() ? info[index] : info.Env().Undefined();
}

[[noreturn]] void ThrowType(Napi::Env env, const char* name, const char* expected) {
  throw Napi::TypeError::New(env, std::string("The \"") + name + "\" argument must be " + expected);
}

}  // namespace

int32_t ArgInt32(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = Arg(info, index);
  if (!value.IsNumber()) ThrowType(info.Env(), name, "a number");
  return value.As<Napi::Number>().Int32Value();
}

uint64_t ArgUint64(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = Arg(info, index);
  if (!value.IsBigInt()) ThrowType(info.Env(), name, "a bigint");
  bool lossless = false;
  uint64_t result = value.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) {
    throw Napi::RangeError::New(info.Env(), std::string("The \"") + name + "\" argument must fit in a u64");
  }
  return result;
}

std::string ArgString(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = Arg(info, index);
  if (!value.IsString()) ThrowType(info.Env(), name, "a string");
  return value.As<Napi::String>().Utf8Value();
}

bool ArgBool(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = Arg(info, index);
  if (!value.IsBoolean()) ThrowType(info.Env(), name, "a boolean");
  return value.As<Napi::Boolean>().Value();
}

Napi::Value ToJs(Napi::Env env, int value) { return Napi::Number::New(env, value); }

Napi::Value ToJs(Napi::Env env, const std::string& value) {
  return Napi::String::New(env, value);
}

}  // namespace lu::napi
