// N-API glue for passing fds over Unix sockets (native/fdpass.h).
//
// Synchronous forms loop step() and poll(). Promise forms are driven by the
// event loop: a PollOp tries the operation at once and, on EAGAIN, waits on
// a uv_poll_t for readiness, then tries again. No thread is parked.
//
// Every operation works on its own F_DUPFD_CLOEXEC copy of the caller's fd.
// Two reasons: libuv keeps one watcher per fd number, so polling the very fd
// a net.Socket's handle owns would displace Node's own watcher; and if the
// caller closes its fd while we wait, the number may be reused for another
// file, which we must never send to or read from.
#include <poll.h>
#include <sys/socket.h>
#include <uv.h>

#include <memory>
#include <utility>
#include <vector>

#include "fdpass.h"
#include "napi_util.h"

namespace lu::napi {
namespace {

// ---- argument readers -----------------------------------------------------

std::vector<uint8_t> ArgBytes(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = info[index];
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string("The \"") + name + "\" argument must be a Uint8Array");
  }
  auto bytes = value.As<Napi::Uint8Array>();
  return std::vector<uint8_t>(bytes.Data(), bytes.Data() + bytes.ByteLength());
}

std::vector<int> ArgFds(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = info[index];
  if (!value.IsArray()) {
    throw Napi::TypeError::New(info.Env(), std::string("The \"") + name + "\" argument must be an array");
  }
  auto array = value.As<Napi::Array>();
  if (array.Length() > kMaxFdsPerMessage) {
    throw Napi::RangeError::New(info.Env(), std::string("The \"") + name + "\" argument has more than 253 fds");
  }
  std::vector<int> fds;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value fd = array.Get(i);
    if (!fd.IsNumber()) throw Napi::TypeError::New(info.Env(), std::string("Every fd in \"") + name + "\" must be a number");
    fds.push_back(fd.As<Napi::Number>().Int32Value());
  }
  return fds;
}

Framing ArgFraming(const Napi::CallbackInfo& info, size_t index) {
  return ArgInt32(info, index, "framing") == 1 ? Framing::kNone : Framing::kFrame;
}

// A private copy of the caller's socket (see the top of this file).
UniqueFd DupArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  int fd = dup_cloexec(ArgInt32(info, index, name));
  if (fd < 0) throw ErrnoError(info.Env(), -fd, "fcntl");
  return UniqueFd(fd);
}

// ---- the operations -------------------------------------------------------

// One send, receive or wait, as steps that never block.
class Work {
 public:
  virtual ~Work() = default;
  virtual Step Start() = 0;
  virtual Step Next() = 0;
  virtual int Fd() const = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;
};

class SendWork : public Work {
 public:
  SendWork(UniqueFd sock, std::vector<uint8_t> data, std::vector<int> fds, Framing framing)
      : fd_(sock.get()), sender_(std::move(sock), std::move(data), std::move(fds), framing) {}
  Step Start() override { return sender_.start(); }
  Step Next() override { return sender_.step(); }
  int Fd() const override { return fd_; }
  Napi::Value Result(Napi::Env env) override {
    return Napi::Number::New(env, static_cast<double>(sender_.bytes_sent()));
  }

 private:
  int fd_;
  FdSender sender_;
};

class RecvWork : public Work {
 public:
  RecvWork(UniqueFd sock, size_t max_bytes, size_t max_fds, Framing framing)
      : fd_(sock.get()), receiver_(std::move(sock), max_bytes, max_fds, framing) {}
  Step Start() override { return receiver_.start(); }
  Step Next() override { return receiver_.step(); }
  int Fd() const override { return fd_; }
  // { status, data, fds, dropped, length }: the fds pass to JS here.
  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    std::vector<uint8_t>& data = receiver_.data();
    out.Set("status", static_cast<double>(receiver_.status()));
    out.Set("data", Napi::Buffer<uint8_t>::Copy(env, data.data(), data.size()));
    Napi::Array fds = Napi::Array::New(env, receiver_.fds().size());
    for (size_t i = 0; i < receiver_.fds().size(); ++i) {
      fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, receiver_.fds()[i].get()));
    }
    for (UniqueFd& fd : receiver_.fds()) fd.release();
    out.Set("fds", fds);
    out.Set("dropped", static_cast<double>(receiver_.dropped_fds()));
    out.Set("length", static_cast<double>(receiver_.message_len()));
    return out;
  }

 private:
  int fd_;
  FdReceiver receiver_;
};

// Waits until an fd is readable or hung up (the barrier's pipe: EOF).
class WaitWork : public Work {
 public:
  explicit WaitWork(UniqueFd fd) : fd_(std::move(fd)) {}
  Step Start() override { return {}; }
  Step Next() override {
    int revents = wait_fd(fd_.get(), POLLIN, 0);
    if (revents < 0) return {-revents, 0, "poll"};
    return revents ? Step{} : Step{EAGAIN, POLLIN, ""};
  }
  int Fd() const override { return fd_.get(); }
  Napi::Value Result(Napi::Env env) override { return Napi::Boolean::New(env, true); }

 private:
  UniqueFd fd_;
};

// ---- synchronous runner ---------------------------------------------------

// Steps `work` to the end, blocking in poll() between steps. A timeout
// (ms >= 0) bounds each wait and ends in ETIMEDOUT.
Napi::Value RunBlocking(Napi::Env env, Work& work, int timeout_ms) {
  Step s = work.Start();
  if (s.err) throw ErrnoError(env, s.err, s.syscall);
  for (;;) {
    s = work.Next();
    if (s.err == 0) return work.Result(env);
    if (s.err != EAGAIN) throw ErrnoError(env, s.err, s.syscall);
    int revents = wait_fd(work.Fd(), s.events, timeout_ms);
    if (revents < 0) throw ErrnoError(env, -revents, "poll");
    if (revents == 0) throw ErrnoError(env, ETIMEDOUT, "poll");
  }
}

// ---- event-loop runner ----------------------------------------------------

// One pending operation on the event loop. It keeps itself alive (self_)
// while its uv_poll_t is open and lets go in the close callback. The
// Promise carries a cancel() that holds only a weak reference.
class PollOp : public std::enable_shared_from_this<PollOp> {
 public:
  static Napi::Value Run(Napi::Env env, std::unique_ptr<Work> work) {
    std::shared_ptr<PollOp> op(new PollOp(env, std::move(work)));
    Napi::Promise promise = op->deferred_.Promise();
    op->Begin();
    std::weak_ptr<PollOp> weak = op;
    promise.Set("cancel", Napi::Function::New(env, [weak](const Napi::CallbackInfo& info) {
                  if (auto live = weak.lock()) live->Fail(ECANCELED, "poll");
                  return info.Env().Undefined();
                }));
    return promise;
  }

 private:
  PollOp(Napi::Env env, std::unique_ptr<Work> work)
      : env_(env), deferred_(Napi::Promise::Deferred::New(env)),
        context_(env, "liveupdate.fdpass"), work_(std::move(work)) {}

  void Begin() {
    Step s = work_->Start();
    if (s.err) return Fail(s.err, s.syscall);
    Advance();
  }

  // Tries the operation; settles, or (re)arms the poll handle.
  void Advance() {
    try {
      Step s = work_->Next();
      if (s.err == EAGAIN) return Wait(s.events);
      if (s.err) return Fail(s.err, s.syscall);
      Settle(work_->Result(env_), true);
    } catch (const Napi::Error& e) {
      Settle(e.Value(), false);
    }
  }

  void Wait(short events) {
    if (!open_) {
      uv_loop_t* loop = nullptr;
      napi_get_uv_event_loop(env_, &loop);
      int rc = uv_poll_init(loop, &poll_, work_->Fd());
      if (rc < 0) return Fail(-rc, "uv_poll_init");
      poll_.data = this;
      open_ = true;
      self_ = shared_from_this();
      // A Worker that exits with this operation pending must not find the
      // handle open when it closes its loop (Node aborts): close it then.
      napi_add_async_cleanup_hook(env_, OnEnvCleanup, this, &cleanup_);
    }
    int uv_events = (events & POLLIN) ? UV_READABLE : UV_WRITABLE;
    int rc = uv_poll_start(&poll_, uv_events, OnPoll);
    if (rc < 0) Fail(-rc, "uv_poll_start");
  }

  static void OnPoll(uv_poll_t* handle, int status, int) {
    auto* op = static_cast<PollOp*>(handle->data);
    if (op->settled_) return;
    Napi::HandleScope scope(op->env_);
    // Settling inside a callback scope runs the Promise reactions now,
    // not at whatever JS happens to run next.
    Napi::CallbackScope callback(op->env_, op->context_);
    if (status < 0) return op->Fail(-status, "poll");
    op->Advance();
  }

  void Fail(int err, const char* syscall) { Settle(ErrnoError(env_, err, syscall).Value(), false); }

  void Settle(Napi::Value value, bool ok) {
    if (settled_) return;
    settled_ = true;
    if (ok) {
      deferred_.Resolve(value);
    } else {
      deferred_.Reject(value);
    }
    if (open_) {
      open_ = false;
      // uv_close stops the poll and drops the fd from epoll at once; libuv
      // does not touch the fd after this, so it can be closed now.
      uv_close(reinterpret_cast<uv_handle_t*>(&poll_), OnClose);
    }
    // Closes our dup now rather than in OnClose: once the Promise settles,
    // the caller may expect this socket's last fd to be gone (the peer
    // waiting for EOF, a test counting fds).
    work_.reset();
  }

  // The environment is going away: no JS may run, so close without settling.
  static void OnEnvCleanup(napi_async_cleanup_hook_handle, void* arg) {
    auto* op = static_cast<PollOp*>(arg);
    op->settled_ = true;
    if (op->open_) {  // Else already closing: OnClose removes the hook.
      op->open_ = false;
      uv_close(reinterpret_cast<uv_handle_t*>(&op->poll_), OnClose);
    }
    op->work_.reset();
  }

  static void OnClose(uv_handle_t* handle) {
    auto* op = static_cast<PollOp*>(handle->data);
    // Removing the hook tells a closing environment this operation is done.
    napi_remove_async_cleanup_hook(op->cleanup_);
    Napi::HandleScope scope(op->env_);
    std::shared_ptr<PollOp> last = std::move(op->self_);  // Freed on return.
  }

  Napi::Env env_;
  Napi::Promise::Deferred deferred_;
  Napi::AsyncContext context_;
  std::unique_ptr<Work> work_;
  uv_poll_t poll_{};
  napi_async_cleanup_hook_handle cleanup_ = nullptr;
  bool open_ = false;
  bool settled_ = false;
  std::shared_ptr<PollOp> self_;
};

// ---- exported functions ---------------------------------------------------

std::unique_ptr<Work> MakeSend(const Napi::CallbackInfo& info) {
  // Arguments first: a TypeError must come before any syscall (the dup).
  std::vector<uint8_t> data = ArgBytes(info, 1, "data");
  std::vector<int> fds = ArgFds(info, 2, "fds");
  Framing framing = ArgFraming(info, 3);
  return std::make_unique<SendWork>(DupArg(info, 0, "fd"), std::move(data), std::move(fds), framing);
}

std::unique_ptr<Work> MakeRecv(const Napi::CallbackInfo& info) {
  auto max_bytes = static_cast<size_t>(ArgInt32(info, 1, "maxBytes"));
  int max_fds = ArgInt32(info, 2, "maxFds");
  if (max_fds < 0 || static_cast<size_t>(max_fds) > kMaxFdsPerMessage) {
    throw Napi::RangeError::New(info.Env(), "The \"maxFds\" argument must be 0 to 253");
  }
  Framing framing = ArgFraming(info, 3);
  return std::make_unique<RecvWork>(DupArg(info, 0, "fd"), max_bytes, static_cast<size_t>(max_fds), framing);
}

void ExportOps(Napi::Env env, Napi::Object exports) {
  exports.Set("sendFds", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return RunBlocking(info.Env(), *MakeSend(info), -1);
              }, "sendFds"));
  exports.Set("sendFdsAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return PollOp::Run(info.Env(), MakeSend(info));
              }, "sendFdsAsync"));
  exports.Set("recvFds", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return RunBlocking(info.Env(), *MakeRecv(info), -1);
              }, "recvFds"));
  exports.Set("recvFdsAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return PollOp::Run(info.Env(), MakeRecv(info));
              }, "recvFdsAsync"));
  // waitReadable(fd, timeoutMs): true when readable or hung up; ETIMEDOUT.
  exports.Set("waitReadable", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                int timeout = ArgInt32(info, 1, "timeoutMs");
                WaitWork work(DupArg(info, 0, "fd"));
                return RunBlocking(info.Env(), work, timeout);
              }, "waitReadable"));
  exports.Set("waitReadableAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return PollOp::Run(info.Env(), std::make_unique<WaitWork>(DupArg(info, 0, "fd")));
              }, "waitReadableAsync"));
}

// ---- small socket helpers (ExportCall: sync + Async) ------------------------

// Two fds as a JS array: [socketpair end 0, end 1] or [read end, write end].
struct FdPair {
  int fds[2] = {-1, -1};
};

// Found by RunSync through argument-dependent lookup (FdPair lives here).
Napi::Value ToJs(Napi::Env env, const FdPair& pair) {
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, pair.fds[0]));
  out.Set(1u, Napi::Number::New(env, pair.fds[1]));
  return out;
}

Call<FdPair> PrepareSocketPair(const Napi::CallbackInfo& info) {
  int type = ArgInt32(info, 0, "type");
  return {"socketpair", [type](FdPair& pair) { return unix_socket_pair(type, pair.fds); }};
}

Call<FdPair> PreparePipe(const Napi::CallbackInfo&) {
  return {"pipe2", [](FdPair& pair) { return pipe_cloexec(pair.fds); }};
}

Call<int> PrepareUnixBind(const Napi::CallbackInfo& info) {
  int type = ArgInt32(info, 0, "type");
  std::string path = ArgString(info, 1, "path");
  return {"bind", [type, path](int& fd) { return fd = unix_bind(type, path); }};
}

Call<int> PrepareUnixConnect(const Napi::CallbackInfo& info) {
  int type = ArgInt32(info, 0, "type");
  std::string path = ArgString(info, 1, "path");
  return {"connect", [type, path](int& fd) { return fd = unix_connect(type, path); }};
}

Call<int> PrepareUnixAccept(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  return {"accept4", [fd](int& out) { return out = unix_accept(fd); }};
}

Call<int> PrepareSocketType(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  return {"getsockopt", [fd](int& type) { return type = socket_type(fd); }};
}

Call<int> PrepareSetCloexec(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  bool on = ArgBool(info, 1, "on");
  return {"fcntl", [fd, on](int&) { return set_cloexec(fd, on); }};
}

Call<int> PrepareGetCloexec(const Napi::CallbackInfo& info) {
  int fd = ArgInt32(info, 0, "fd");
  return {"fcntl", [fd](int& on) { return on = get_cloexec(fd); }};
}

}  // namespace

void RegisterFdPass(Napi::Env env, Napi::Object exports) {
  ExportOps(env, exports);
  ExportCall<FdPair, PrepareSocketPair>(env, exports, "socketPair");
  ExportCall<FdPair, PreparePipe>(env, exports, "pipe");
  ExportCall<int, PrepareUnixBind>(env, exports, "unixBind");
  ExportCall<int, PrepareUnixConnect>(env, exports, "unixConnect");
  ExportCall<int, PrepareUnixAccept>(env, exports, "unixAccept");
  ExportCall<int, PrepareSocketType>(env, exports, "socketType");
  ExportCall<int, PrepareSetCloexec>(env, exports, "setCloexec");
  ExportCall<int, PrepareGetCloexec>(env, exports, "getCloexec");
  exports.Set("SOCK_STREAM", static_cast<double>(SOCK_STREAM));
  exports.Set("SOCK_DGRAM", static_cast<double>(SOCK_DGRAM));
  exports.Set("SOCK_SEQPACKET", static_cast<double>(SOCK_SEQPACKET));
}

}  // namespace lu::napi
