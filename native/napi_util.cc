#include "napi_util.h"

#include <fcntl.h>
#include <uv.h>

#include <cerrno>
#include <climits>
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

AddonData& Data(Napi::Env env) {
  auto* data = env.GetInstanceData<AddonData>();
  if (data == nullptr) {
    data = new AddonData();
    env.SetInstanceData(data);  // Deleted with the environment.
  }
  return *data;
}

Napi::Value SetErrorFactory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value fn = info[0];
  if (!fn.IsUndefined() && !fn.IsFunction()) ThrowArgType(env, "factory", "of type function");
  bool with_state = info.Length() > 1 && !info[1].IsUndefined();
  if (with_state) {
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
        info[1].As<Napi::Int32Array>().ElementLength() != kCallStateSlots) {
      ThrowArgType(env, "callState", "an Int32Array of 2 elements");
    }
    if (info.Length() < 3 || !info[2].IsArray()) ThrowArgType(env, "syscalls", "of type Array");
  }
  AddonData& data = Data(env);
  data.error_factory.Reset();
  if (fn.IsFunction()) data.error_factory = Napi::Persistent(fn.As<Napi::Function>());
  if (with_state) {
    Napi::Int32Array state = info[1].As<Napi::Int32Array>();
    data.call_state = Napi::Persistent(state);
    data.slots = state.Data();
    data.syscalls.clear();
    data.syscall_names = Napi::Persistent(info[2].As<Napi::Array>());
  }
  return env.Undefined();
}

bool TakeArm(napi_env env) {
  void* raw = nullptr;
  if (napi_get_instance_data(env, &raw) != napi_ok || raw == nullptr) return false;
  int32_t* slots = static_cast<AddonData*>(raw)->slots;
  if (slots == nullptr || slots[kArmed] == 0) return false;
  slots[kArmed] = 0;
  return true;
}

namespace {

// The index of `syscall` in the syscalls named to the TypeScript layer
// (named there on first use), or -1 if it cannot be.
int SyscallIndex(napi_env env, AddonData& data, const char* syscall) {
  // A handful of string literals: a linear search of their addresses.
  for (size_t i = 0; i < data.syscalls.size(); ++i) {
    if (data.syscalls[i] == syscall) return static_cast<int>(i);
  }
  uint32_t index = static_cast<uint32_t>(data.syscalls.size());
  napi_value names = nullptr, name = nullptr;
  if (index >= (1u << 19) || napi_get_reference_value(env, data.syscall_names.operator napi_ref(), &names) != napi_ok ||
      names == nullptr || napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_set_element(env, names, index, name) != napi_ok) {
    return -1;
  }
  data.syscalls.push_back(syscall);
  return static_cast<int>(index);
}

}  // namespace

Napi::Value ReportFailure(Napi::Env env, int err, const char* syscall) {
  auto* data = env.GetInstanceData<AddonData>();
  int index = data == nullptr || data->slots == nullptr || err <= 0 || err >= (1 << 12) || !UvKnows(err)
                  ? -1
                  : SyscallIndex(env, *data, syscall);
  if (index < 0) return ThrowErrno(env, err, syscall);
  data->slots[kFailure] = (index << 12) | err;
  return env.Undefined();
}

namespace {

// The error the registered factory plans, constructed here, or nullptr:
// none registered, it declined (undefined: the error is made here, as
// without one), or it failed (its exception is cleared, and the error
// made here).
napi_value FactoryError(napi_env env, int err, const char* code, const char* syscall) {
  auto* data = Napi::Env(env).GetInstanceData<AddonData>();
  if (data == nullptr || data->error_factory.IsEmpty()) return nullptr;
  napi_value factory = nullptr, receiver = nullptr, args[4] = {}, error = nullptr;
  const char* text = ErrnoText(err);
  bool made = napi_get_reference_value(env, data->error_factory.operator napi_ref(), &factory) == napi_ok && factory != nullptr &&
              napi_create_int32(env, -err, &args[0]) == napi_ok &&
              napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &args[1]) == napi_ok &&
              napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &args[2]) == napi_ok &&
              napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &args[3]) == napi_ok &&
              napi_get_undefined(env, &receiver) == napi_ok &&
              napi_call_function(env, receiver, factory, 4, args, &error) == napi_ok;
  bool is_plan = false;
  made = made && napi_is_array(env, error, &is_plan) == napi_ok && is_plan;
  napi_value plan[5] = {};
  for (uint32_t i = 0; made && i < 5; ++i) made = napi_get_element(env, error, i, &plan[i]) == napi_ok;
  if (made && napi_new_instance(env, plan[0], 4, plan + 1, &error) == napi_ok) return error;
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value ignored = nullptr;
    napi_get_and_clear_last_exception(env, &ignored);
  }
  return nullptr;
}

}  // namespace

napi_value ErrnoErrorValue(napi_env env, int err, const char* syscall, bool factory) {
  const char* code = ErrnoName(err);
  if (factory) {
    if (napi_value made = FactoryError(env, err, code, syscall)) return made;
  }
  std::string message = std::string(code) + ": " + ErrnoText(err) + ", " + syscall;
  napi_value text = nullptr, error = nullptr, errno_value = nullptr, code_value = nullptr, syscall_value = nullptr;
  bool made = napi_create_string_utf8(env, message.data(), message.size(), &text) == napi_ok &&
              napi_create_error(env, nullptr, text, &error) == napi_ok &&
              napi_create_int32(env, -err, &errno_value) == napi_ok &&
              napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value) == napi_ok &&
              napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value) == napi_ok &&
              napi_set_named_property(env, error, "errno", errno_value) == napi_ok &&
              napi_set_named_property(env, error, "code", code_value) == napi_ok &&
              napi_set_named_property(env, error, "syscall", syscall_value) == napi_ok;
  return made ? error : nullptr;
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, bool factory) {
  napi_value error = ErrnoErrorValue(env, err, syscall, factory);
  if (error == nullptr) throw Napi::Error::New(env);
  return Napi::Error(env, error);
}

Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall) {
  napi_value error = ErrnoErrorValue(env, err, syscall);
  if (error == nullptr) throw Napi::Error::New(env);
  napi_throw(env, error);
  return Napi::Value();
}

namespace {

Napi::Value Arg(const Napi::CallbackInfo& info, size_t index) {
  return index < info.Length() ? info[index] : info.Env().Undefined();
}

template <typename E>
[[noreturn]] void ThrowCoded(Napi::Env env, const std::string& message, const char* code) {
  E error = E::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  throw error;
}

}  // namespace

void ThrowArgType(Napi::Env env, const char* name, const char* expected) {
  ThrowCoded<Napi::TypeError>(env, std::string("The \"") + name + "\" argument must be " + expected, "ERR_INVALID_ARG_TYPE");
}

void ThrowArgRange(Napi::Env env, const char* name, const char* range) {
  ThrowCoded<Napi::RangeError>(env, std::string("The value of \"") + name + "\" is out of range. It must be " + range,
                               "ERR_OUT_OF_RANGE");
}

int32_t ArgInt32InRange(const Napi::CallbackInfo& info, size_t index, const char* name, int32_t min, int32_t max) {
  // One query: it fails for anything but a number. Int32Value() would wrap
  // 2**32 + k to k and turn NaN into 0: compare the double itself. NaN
  // fails both comparisons, fractions fail the cast check.
  double number = 0;
  if (napi_get_value_double(info.Env(), Arg(info, index), &number) != napi_ok) ThrowArgType(info.Env(), name, "of type number");
  if (!(number >= min && number <= max) || number != static_cast<double>(static_cast<int32_t>(number))) {
    ThrowIntOutOfRange(info.Env(), name, min, max);
  }
  return static_cast<int32_t>(number);
}

void ThrowIntOutOfRange(Napi::Env env, const char* name, int32_t min, int32_t max) {
  std::string range = "an integer >= " + std::to_string(min) + " and <= " + std::to_string(max);
  ThrowArgRange(env, name, range.c_str());
}

int32_t ArgInt32(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return ArgInt32InRange(info, index, name, INT32_MIN, INT32_MAX);
}

int ArgFd(const Napi::CallbackInfo& info, size_t index, const char* name) {
  return ArgInt32InRange(info, index, name, 0, INT32_MAX);
}

uint64_t ArgUint64(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = Arg(info, index);
  if (!value.IsBigInt()) ThrowArgType(info.Env(), name, "of type bigint");
  bool lossless = false;
  uint64_t result = value.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) ThrowArgRange(info.Env(), name, ">= 0n and <= 2n ** 64n - 1n");
  return result;
}

std::vector<uint64_t> ArgBigUint64Array(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = Arg(info, index);
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array) {
    ThrowArgType(info.Env(), name, "an instance of BigUint64Array");
  }
  auto values = value.As<Napi::TypedArrayOf<uint64_t>>();
  return std::vector<uint64_t>(values.Data(), values.Data() + values.ElementLength());
}

std::string ArgString(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = Arg(info, index);
  if (!value.IsString()) ThrowArgType(info.Env(), name, "of type string");
  return value.As<Napi::String>().Utf8Value();
}

bool ArgBool(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = Arg(info, index);
  if (!value.IsBoolean()) ThrowArgType(info.Env(), name, "of type boolean");
  return value.As<Napi::Boolean>().Value();
}

void FdArgs::CheckOpen(Napi::Env env, const std::vector<int>& fds, const char* syscall) const {
  if (when_ == When::kNow) return;
  for (int fd : fds) {
    if (::fcntl(fd, F_GETFD) < 0) throw ErrnoError(env, errno, syscall);
  }
}

int FdArgs::Use(Napi::Env env, int fd, const char* syscall) {
  if (when_ == When::kNow) return fd;
  copies_.reserve(copies_.size() + 1);  // A bad_alloc now, not after the dup.
  int copy = dup_cloexec(fd);
  if (copy < 0) throw ErrnoError(env, -copy, syscall);
  copies_.emplace_back(copy);
  return copy;
}

napi_value ThrowCaught(napi_env env) {
  try {
    throw;
  } catch (const Napi::Error& error) {
    error.ThrowAsJavaScriptException();
  } catch (const std::exception& e) {
    Napi::Error::New(env, e.what()).ThrowAsJavaScriptException();
  } catch (...) {
    Napi::Error::New(env, "A native exception was thrown").ThrowAsJavaScriptException();
  }
  return nullptr;
}

void DefineExports(Napi::Env env, Napi::Object exports, const Export* table, size_t count) {
  std::vector<napi_property_descriptor> properties;
  properties.reserve(2 * count);
  // napi_create_function rather than a descriptor's method: it names the
  // function (`fn.name`), as before.
  auto add = [&](const char* name, napi_callback entry, const char* what) {
    napi_value fn = nullptr;
    NAPI_THROW_IF_FAILED_VOID(env, napi_create_function(env, name, NAPI_AUTO_LENGTH, entry, const_cast<char*>(what), &fn));
    // Every field named: GCC warns of any a designated initializer leaves out.
    properties.push_back({.utf8name = name, .name = nullptr, .method = nullptr, .getter = nullptr, .setter = nullptr, .value = fn, .attributes = napi_default_jsproperty, .data = nullptr});
  };
  for (const Export* e = table; e != table + count; ++e) {
    add(e->name, e->entry, e->name);
    if (e->async_entry != nullptr) add(e->async_name, e->async_entry, e->name);
  }
  NAPI_THROW_IF_FAILED_VOID(env, napi_define_properties(env, exports, properties.size(), properties.data()));
}

Napi::Value ToJs(Napi::Env env, int value) { return Napi::Number::New(env, value); }

Napi::Value ToJs(Napi::Env env, const std::string& value) {
  return Napi::String::New(env, value);
}

Napi::Value ToJs(Napi::Env env, const NewFd& value) { return Napi::Number::New(env, value.fd.get()); }

}  // namespace lu::napi
