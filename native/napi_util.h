// napi_util.h - what every N-API glue file shares: the one errno-to-JS-error
// helper, argument readers, and the sync/async runner for kernel calls.
//
// No C++ exception may leave an N-API callback or a libuv callback: one that
// does ends the whole process (std::terminate), including every other Worker.
// Entry points convert what they catch into JS errors (Guarded), and the
// completion of a thread-pool call catches everything, because it also runs
// while an environment is being torn down, when no JS value can be made.
#pragma once

#include <napi.h>

#include <cstdint>
#include <functional>
#include <cerrno>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "unique_fd.h"

namespace lu::napi {

// An Error shaped like Node's system errors: message "CODE: text, syscall",
// and the fields errno (negative, as in Node), code and syscall. The value
// alone (nullptr if it could not be made), as a Napi::Error, or thrown into
// JS: the hot paths throw with ThrowErrno, which returns the empty value to
// return, rather than as a C++ exception (whose unwinding costs more than
// the error itself).
//
// Where the TypeScript layer registered a factory (SetErrorFactory), it is
// asked first, with (errno, code, text, syscall): inside a call it
// translates, it answers [constructor, ...arguments] of the typed error,
// constructed here (so that its stack capture starts below the native
// call, as the system error's would) in place of the system error: a
// failure then costs one stack capture, not two. Elsewhere it answers
// undefined, and the system error is made here.
// `factory` false: never the factory's (an error that gets fields of its
// own before it reaches JS, such as fd passing's outOfStep).
napi_value ErrnoErrorValue(napi_env env, int err, const char* syscall, bool factory = true);
// setErrorFactory(fn[, callState, syscalls]): the factory of every later
// error of this addon in this environment (undefined: none). callState (an
// Int32Array of kCallStateSlots) and syscalls (an Array) are the TypeScript
// layer's side of ReportFailure; given once, kept when later calls omit them.
Napi::Value SetErrorFactory(const Napi::CallbackInfo& info);

// The slots of callState. kArmed: set by the TypeScript layer just before it
// calls a sync form itself and checks the result (callNative); the sync form
// entered takes it (TakeArm), so it applies to that call alone. kFailure:
// where an armed call that failed reports it instead of throwing,
// (syscall's index in syscalls) << 12 | errno, 0 for none.
enum CallStateSlot { kArmed = 0, kFailure = 1, kCallStateSlots = 2 };
// Whether the TypeScript layer armed the sync call just entered (and
// disarms it: any later call throws as usual).
bool TakeArm(napi_env env);
// An armed call's failure: reported in callState, the TypeScript layer
// builds and throws the typed error itself (no JS error made here, no
// throw across the addon's boundary: one throw, from JS, for the whole
// failure). Errnos libuv does not name are thrown as usual (the TypeScript
// layer names errnos from node's table, which is libuv's).
Napi::Value ReportFailure(Napi::Env env, int err, const char* syscall);
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, bool factory = true);
Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall);

// Argument readers. Each refuses, by itself, whatever its C type cannot hold
// exactly: a TypeError (code ERR_INVALID_ARG_TYPE) for the wrong JS type, a
// RangeError (code ERR_OUT_OF_RANGE) for NaN, Infinity, fractions and values
// outside the range. The TypeScript layer validates first; these keep a
// direct caller of the binding from reaching a syscall with garbage.
int32_t ArgInt32(const Napi::CallbackInfo& info, size_t index, const char* name);
int32_t ArgInt32InRange(const Napi::CallbackInfo& info, size_t index, const char* name, int32_t min, int32_t max);
// An fd number: an int32 >= 0.
int ArgFd(const Napi::CallbackInfo& info, size_t index, const char* name);
uint64_t ArgUint64(const Napi::CallbackInfo& info, size_t index, const char* name);
// A BigUint64Array's values, copied (a queued call must not see later writes).
std::vector<uint64_t> ArgBigUint64Array(const Napi::CallbackInfo& info, size_t index, const char* name);
std::string ArgString(const Napi::CallbackInfo& info, size_t index, const char* name);
bool ArgBool(const Napi::CallbackInfo& info, size_t index, const char* name);
[[noreturn]] void ThrowArgType(Napi::Env env, const char* name, const char* expected);
[[noreturn]] void ThrowArgRange(Napi::Env env, const char* name, const char* range);
// ThrowArgRange for an integer outside [min, max], in the words ArgInt32InRange uses.
[[noreturn]] void ThrowIntOutOfRange(Napi::Env env, const char* name, int32_t min, int32_t max);

// The fds a call acts on. A call run now (a sync form) acts on the caller's
// numbers: no JS runs before it returns, so they still name the files the
// caller gave. A queued call (a Promise form, a pinned send) acts on private
// copies made with F_DUPFD_CLOEXEC when the call is made, so it acts on the
// files it was given even if the caller closes (and the process reuses) the
// numbers meanwhile; the copies are closed when the call is done with them.
// The fd-passing Promise forms (napi_fdpass.cc) are both: each is first
// tried at once, on the caller's numbers, and copies only what it still
// needs when it must wait for the socket.
class FdArgs {
 public:
  enum class When { kNow, kQueued };
  explicit FdArgs(When when) : when_(when) {}
  // The fd the call should use for the caller's `fd`. A copy that cannot be
  // made (EBADF: not open; EMFILE) throws the Node-style error under the
  // syscall of the call itself, which is what would have failed: the copy
  // is this layer's detail.
  int Use(Napi::Env env, int fd, const char* syscall);
  // For a queued call with several fd arguments, throws EBADF (under
  // `syscall`) unless every one of `fds` is open. Call it before the first
  // Use: a copy takes the lowest free number, which may be that of a later
  // argument the caller closed, and the call would then act on the copy
  // instead of failing. A call run now lets the syscall itself say EBADF.
  void CheckOpen(Napi::Env env, const std::vector<int>& fds, const char* syscall) const;
  size_t copies() const { return copies_.size(); }

 private:
  When when_;
  std::vector<UniqueFd> copies_;
};
using When = FdArgs::When;

// A result that is a new fd: owned here until JS has received it, so an fd
// whose Promise cannot be resolved (the environment is going away) is closed.
struct NewFd {
  UniqueFd fd;
  // Adopts a syscall's result (an fd or -errno) and passes it on.
  int Adopt(int rc) {
    if (rc >= 0) fd.reset(rc);
    return rc;
  }
};

// A prepared kernel call: `run` executes off or on the JS thread and returns
// 0 (or a non-negative value) or -errno, filling a result of type T that
// then becomes a JS value. `fds` holds any copies `run` acts on.
template <typename T>
struct Call {
  // A string literal: it outlives a queued call, and ReportFailure knows
  // each syscall by its address.
  const char* syscall;
  std::function<int(T&)> run;
  FdArgs fds = FdArgs(When::kNow);
};

// What every Prepare* is: the JS arguments (and how their fds are to be
// held, FdArgs) turned into a Call.
template <typename T>
using Prepare = Call<T> (*)(const Napi::CallbackInfo&, FdArgs);

// Turning results into JS values. ToJs must not give up ownership of
// anything: HandOver does, once the value has reached JS.
Napi::Value ToJs(Napi::Env env, int value);
Napi::Value ToJs(Napi::Env env, const std::string& value);
Napi::Value ToJs(Napi::Env env, const NewFd& value);
inline void HandOver(int&) {}
inline void HandOver(std::string&) {}
inline void HandOver(NewFd& value) { value.fd.release(); }

// Runs `run` (the body of a JS-callable function) with every C++ exception
// that is not already a JS error turned into one: std::bad_alloc into a
// Node-style ENOMEM error naming `what`, anything else into a plain Error.
template <typename Run>
Napi::Value Guarded(Napi::Env env, const char* what, Run&& run) {
  try {
    return run();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw ErrnoError(env, ENOMEM, what);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string(what) + ": " + e.what());
  }
}

template <typename T>
Napi::Value RunSync(Napi::Env env, const Call<T>& call, bool armed = false) {
  T result{};
  int rc = call.run(result);
  if (rc < 0) return armed ? ReportFailure(env, -rc, call.syscall) : ThrowErrno(env, -rc, call.syscall);
  Napi::Value value = ToJs(env, result);
  HandOver(result);  // Returned to JS below: nothing can fail after this.
  return value;
}

// Runs the call on the libuv thread pool and settles a Promise with it. The
// raw napi_async_work API rather than Napi::AsyncWorker: the latter opens a
// HandleScope outside any try block on completion, which throws (and so
// aborts the process) when the environment is shutting down.
template <typename T>
class CallWorker {
 public:
  static Napi::Value Queue(Napi::Env env, Call<T> call) {
    std::unique_ptr<CallWorker> worker(new CallWorker(env, std::move(call)));
    Napi::Promise promise = worker->deferred_.Promise();
    napi_value name = Napi::String::New(env, worker->call_.syscall);
    napi_status status = napi_create_async_work(env, nullptr, name, Execute, Complete, worker.get(), &worker->work_);
    if (status != napi_ok) throw Napi::Error::New(env);
    status = napi_queue_async_work(env, worker->work_);
    if (status != napi_ok) {
      napi_delete_async_work(env, worker->work_);
      throw Napi::Error::New(env);
    }
    worker.release();  // Complete() owns it from here.
    return promise;
  }

 private:
  CallWorker(Napi::Env env, Call<T> call) : deferred_(Napi::Promise::Deferred::New(env)), call_(std::move(call)) {}

  static void Execute(napi_env, void* data) {
    auto* self = static_cast<CallWorker*>(data);
    try {
      self->rc_ = self->call_.run(self->result_);
    } catch (const std::bad_alloc&) {
      self->rc_ = -ENOMEM;
    } catch (...) {
      self->rc_ = -EIO;
    }
  }

  // Settles the Promise; when that is impossible (the environment is going
  // away, or out of memory), the worker is deleted with its result, whose
  // destructor closes any fd JS never received.
  static void Complete(napi_env env, napi_status status, void* data) {
    std::unique_ptr<CallWorker> self(static_cast<CallWorker*>(data));
    napi_delete_async_work(env, self->work_);
    if (status == napi_cancelled) return;
    try {
      Napi::HandleScope scope(env);
      if (self->rc_ < 0) {
        napi_value error = ErrnoErrorValue(env, -self->rc_, self->call_.syscall);
        if (error == nullptr) return;  // Nothing can reach JS now.
        self->deferred_.Reject(Napi::Value(env, error));
      } else {
        self->deferred_.Resolve(ToJs(env, self->result_));
        HandOver(self->result_);
      }
    } catch (...) {
      // Nothing can reach JS now; dropping the result releases its fds.
    }
  }

  Napi::Promise::Deferred deferred_;
  Call<T> call_;
  T result_{};
  int rc_ = 0;
  napi_async_work work_ = nullptr;
};

// Throws into JS the C++ exception being handled, as node-addon-api's own
// wrapper would (a Napi::Error as itself, any other as a plain Error), and
// returns the empty value: the last line of defence of every entry point.
napi_value ThrowCaught(napi_env env);

// The body of a JS-callable function of the addon.
using Body = Napi::Value (*)(const Napi::CallbackInfo&);

// An entry point: a plain napi_callback, whose data is the name the
// function's errors report (Guarded). No wrapper object and no finalizer
// per function, as Napi::Function::New would make: see Export.
template <Body body>
napi_value Entry(napi_env env, napi_callback_info raw) {
  try {
    Napi::CallbackInfo info(env, raw);
    return Guarded(env, static_cast<const char*>(info.Data()), [&] { return body(info); });
  } catch (...) {
    return ThrowCaught(env);
  }
}

// The synchronous form of a call, and its Promise form.
template <typename T, Prepare<T> prepare>
Napi::Value CallNow(const Napi::CallbackInfo& info) {
  bool armed = TakeArm(info.Env());
  return RunSync(info.Env(), prepare(info, FdArgs(When::kNow)), armed);
}

template <typename T, Prepare<T> prepare>
Napi::Value CallQueued(const Napi::CallbackInfo& info) {
  return CallWorker<T>::Queue(info.Env(), prepare(info, FdArgs(When::kQueued)));
}

// One line of a glue file's table of functions: `name`, and `async_name`
// for its Promise form, whose errors report `name` too. Registration is
// data: every function of the addon is made by the same loop
// (DefineExports), code that a fresh process (translated under emulation,
// each instruction the first time it runs) runs once, not once per function.
struct Export {
  const char* name;
  napi_callback entry;
  const char* async_name = nullptr;
  napi_callback async_entry = nullptr;
};

// `name` (synchronous) only: for calls that act on the fd number itself
// (close, FD_CLOEXEC), which cannot be deferred without acting on whatever
// file has the number by then.
template <typename T, Prepare<T> prepare>
constexpr Export SyncCall(const char* name) {
  return {name, Entry<CallNow<T, prepare>>};
}

// `name` (synchronous) and `async_name` (Promise) from one function that
// turns the JS arguments into a Call.
template <typename T, Prepare<T> prepare>
constexpr Export SyncAndAsyncCall(const char* name, const char* async_name) {
  return {name, Entry<CallNow<T, prepare>>, async_name, Entry<CallQueued<T, prepare>>};
}

template <Body body>
constexpr Export Function(const char* name) {
  return {name, Entry<body>};
}

// Defines the functions of `table` on `exports` as `exports.name = f` would
// (writable, enumerable, configurable), in one napi_define_properties.
void DefineExports(Napi::Env env, Napi::Object exports, const Export* table, size_t count);
template <size_t N>
void DefineExports(Napi::Env env, Napi::Object exports, const Export (&table)[N]) {
  DefineExports(env, exports, table, N);
}

// What the addon keeps per environment (its instance data, made on first
// use): the error factory, the TypeScript layer's call state (slots points
// into the Int32Array call_state holds), the syscalls named to it so far
// (each one's index is its place in both lists), and the fd-passing
// result's property names.
struct AddonData {
  Napi::FunctionReference error_factory;
  Napi::Reference<Napi::Int32Array> call_state;
  int32_t* slots = nullptr;
  std::vector<const char*> syscalls;
  Napi::Reference<Napi::Array> syscall_names;
  Napi::Reference<Napi::Array> result_names;
};
AddonData& Data(Napi::Env env);

// Each glue file registers its functions through one of these.
void RegisterLuo(Napi::Env env, Napi::Object exports);
void RegisterMemfd(Napi::Env env, Napi::Object exports);
void RegisterKexec(Napi::Env env, Napi::Object exports);
void RegisterFdPass(Napi::Env env, Napi::Object exports);
void RegisterPeerCred(Napi::Env env, Napi::Object exports);

}  // namespace lu::napi
