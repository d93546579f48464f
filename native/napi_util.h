// napi_util.h - what every N-API glue file shares: the one errno-to-JS-error
// helper, argument readers, and the sync/async runner for kernel calls.
#pragma once

#include <napi.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace lu::napi {

// An Error shaped like Node's system errors: message "CODE: text, syscall",
// and the fields code, errno (negative, as in Node) and syscall.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall);

// Argument readers: each throws a TypeError naming the argument when the
// value has the wrong type. The TypeScript layer validates first; these keep
// a direct caller of the binding from reaching a syscall with garbage.
int32_t ArgInt32(const Napi::CallbackInfo& info, size_t index, const char* name);
uint64_t ArgUint64(const Napi::CallbackInfo& info, size_t index, const char* name);
std::string ArgString(const Napi::CallbackInfo& info, size_t index, const char* name);
bool ArgBool(const Napi::CallbackInfo& info, size_t index, const char* name);

// A prepared kernel call: `run` executes off or on the JS thread and returns
// its result or -errno; the result of type T then becomes a JS value.
template <typename T>
struct Call {
  const char* syscall;
  std::function<int(T&)> run;
};

Napi::Value ToJs(Napi::Env env, int value);
Napi::Value ToJs(Napi::Env env, const std::string& value);

template <typename T>
Napi::Value RunSync(Napi::Env env, const Call<T>& call) {
  T result{};
  int rc = call.run(result);
  if (rc < 0) throw ErrnoError(env, -rc, call.syscall);
  return ToJs(env, result);
}

// Runs the call on the libuv thread pool and settles a Promise with it.
template <typename T>
class CallWorker : public Napi::AsyncWorker {
 public:
  CallWorker(Napi::Env env, Call<T> call)
      : Napi::AsyncWorker(env, call.syscall),
        deferred_(Napi::Promise::Deferred::New(env)),
        call_(std::move(call)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override { rc_ = call_.run(result_); }
  void OnOK() override {
    Napi::HandleScope scope(Env());
    if (rc_ < 0) {
      deferred_.Reject(ErrnoError(Env(), -rc_, call_.syscall).Value());
    } else {
      deferred_.Resolve(ToJs(Env(), result_));
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  Call<T> call_;
  T result_{};
  int rc_ = 0;
};

template <typename T>
Napi::Value RunAsync(Napi::Env env, Call<T> call) {
  auto* worker = new CallWorker<T>(env, std::move(call));
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // The worker deletes itself once settled.
  return promise;
}

// Registers `name` (synchronous) and `name + "Async"` (Promise) from one
// function that turns the JS arguments into a Call.
template <typename T, Call<T> (*Prepare)(const Napi::CallbackInfo&)>
void ExportCall(Napi::Env env, Napi::Object exports, const char* name) {
  exports.Set(name, Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return RunSync(info.Env(), Prepare(info));
              }, name));
  std::string async_name = std::string(name) + "Async";
  exports.Set(async_name, Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return RunAsync(info.Env(), Prepare(info));
              }, async_name));
}

// Each glue file registers its functions through one of these.
void RegisterLuo(Napi::Env env, Napi::Object exports);
void RegisterMemfd(Napi::Env env, Napi::Object exports);
void RegisterKexec(Napi::Env env, Napi::Object exports);
void RegisterFdPass(Napi::Env env, Napi::Object exports);

}  // namespace lu::napi
