// N-API glue for passing fds over Unix sockets (native/fdpass.h).
//
// Synchronous forms loop step() and poll(). Promise forms are driven by the
// event loop: a PollOp tries the operation at once and, on EAGAIN, waits on
// a uv_poll_t for readiness, then tries again. No thread is parked per
// socket; the fds a receive does not hand to JS are closed by one closer
// thread (FdCloser, below), because a peer's file can make its close block.
// A socket waited on message after message (a connection) keeps one
// ReadableWatch instead: its copy made once, re-armed with one syscall per
// wait in the environment's one epoll set (ReadySet).
//
// The rule of napi_util.h (FdArgs): an operation acts on the caller's own
// numbers and bytes while the call runs, and on copies from the moment it
// goes on after the call returned. The synchronous forms never copy. A
// Promise form first tries at once, on the caller's numbers; only an
// operation that must wait takes F_DUPFD_CLOEXEC copies of the socket (and
// of the fds, if they are not sent yet) and of the bytes left (Work::Detach).
// Two reasons for the copies: libuv keeps one watcher per fd number, so
// polling the very fd a net.Socket's handle owns would displace Node's own
// watcher; and if the caller closes its fd while we wait, the number may be
// reused for another file, which we must never send to or read from.
#include <poll.h>
#include <sys/socket.h>
#include <uv.h>

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fdpass.h"
#include "napi_util.h"

namespace lu::napi {
namespace {

// ---- argument readers -----------------------------------------------------

// The caller's bytes, not copied: valid while the call runs (an operation
// that goes on after it copies what it has not sent, SendWork::Detach).
struct Bytes {
  const uint8_t* data;
  size_t len;
};

Bytes ArgBytes(Napi::Env env, napi_value value, const char* name) {
  // One query: it fails for anything but a typed array, whose type it tells.
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok || type != napi_uint8_array) {
    ThrowArgType(env, name, "an instance of Uint8Array");
  }
  return {static_cast<const uint8_t*>(data), length};
}

Bytes ArgBytes(const Napi::CallbackInfo& info, size_t index, const char* name) { return ArgBytes(info.Env(), info[index], name); }

// The fd numbers of an array, each an int32 >= 0, at most `max`.
uint32_t ArgFdArray(const Napi::CallbackInfo& info, size_t index, const char* name, size_t max) {
  Napi::Value value = info[index];
  if (!value.IsArray()) ThrowArgType(info.Env(), name, "an instance of Array");
  uint32_t length = value.As<Napi::Array>().Length();
  if (length > max) ThrowArgRange(info.Env(), name, "an array of at most 253 fds (and a socket)");
  return length;
}

int ArgFdAt(const Napi::CallbackInfo& info, Napi::Array array, uint32_t i, const char* name) {
  double number = 0;
  if (napi_get_value_double(info.Env(), array.Get(i), &number) != napi_ok) ThrowArgType(info.Env(), name, "an array of fd numbers");
  if (!(number >= 0 && number <= INT32_MAX) || number != static_cast<double>(static_cast<int>(number))) {
    ThrowArgRange(info.Env(), name, "an array of integers >= 0 and <= 2147483647");
  }
  return static_cast<int>(number);
}

std::vector<int> ArgFds(const Napi::CallbackInfo& info, size_t index, const char* name, size_t max = kMaxFdsPerMessage) {
  uint32_t length = ArgFdArray(info, index, name, max);
  auto array = info[index].As<Napi::Array>();
  std::vector<int> fds(length);
  for (uint32_t i = 0; i < length; ++i) fds[i] = ArgFdAt(info, array, i, name);
  return fds;
}

// A message's fds read into the caller's frame, not the heap: the numbers
// of a call that is done before it returns (SendWork keeps copies of its
// own if it must wait, Detach).
struct FdList {
  int fds[kMaxFdsPerMessage];
  uint32_t count = 0;
};

// An array of fds, or one fd as a number: a message's usual one fd costs
// no array to read element by element.
void ArgFds(const Napi::CallbackInfo& info, size_t index, const char* name, FdList& out) {
  double number = 0;
  if (napi_get_value_double(info.Env(), info[index], &number) == napi_ok) {
    if (!(number >= 0 && number <= INT32_MAX) || number != static_cast<double>(static_cast<int>(number))) {
      ThrowArgRange(info.Env(), name, "an fd number: an integer >= 0 and <= 2147483647");
    }
    out.fds[0] = static_cast<int>(number);
    out.count = 1;
    return;
  }
  out.count = ArgFdArray(info, index, name, kMaxFdsPerMessage);
  auto array = info[index].As<Napi::Array>();
  for (uint32_t i = 0; i < out.count; ++i) out.fds[i] = ArgFdAt(info, array, i, name);
}

Framing ArgFraming(const Napi::CallbackInfo& info, size_t index) {
  return ArgInt32InRange(info, index, "framing", 0, 1) == 1 ? Framing::kNone : Framing::kFrame;
}

// A private copy of the caller's socket (see the top of this file).
UniqueFd DupArg(Napi::Env env, int fd) {
  int copy = dup_cloexec(fd);
  if (copy < 0) throw ErrnoError(env, -copy, "fcntl");
  return UniqueFd(copy);
}

// ---- the operations -------------------------------------------------------

// The property names of a receive's result, made once per environment
// (AddonData): a name made from a C string is looked up in V8's string
// table on every use. Held in an array (N-API before version 10 refers to
// objects only).
enum ResultName : uint32_t { kStatus, kData, kFds, kDropped, kLength, kOutOfStep, kResultNames };

void MakeResultNames(Napi::Env env) {
  static const char* const kNames[kResultNames] = {"status", "data", "fds", "dropped", "length", "outOfStep"};
  Napi::Array names = Napi::Array::New(env, kResultNames);
  for (uint32_t i = 0; i < kResultNames; ++i) names.Set(i, Napi::String::New(env, kNames[i]));
  Data(env).result_names = Napi::Persistent(names);
}

// One send, receive or wait, as steps that never block and never throw.
class Work {
 public:
  virtual ~Work() = default;
  virtual Step Start() = 0;
  virtual Step Next() = 0;
  virtual int Fd() const = 0;
  // The JS value of the result; gives up nothing it owns (see HandOver).
  virtual Napi::Value Result(Napi::Env env) = 0;
  // The result reached JS: from now on its fds are the caller's.
  virtual void HandOver() {}
  // Stopped part way through a stream message: the stream is out of step.
  virtual bool MidMessage() const { return false; }
  // The fds received that will not reach JS (every one when `failed`),
  // given up to be closed elsewhere.
  virtual std::vector<UniqueFd> TakeUnwanted(bool /*failed*/) { return {}; }
  // Whether TakeUnwanted(failed) would give any.
  virtual bool HasUnwanted(bool /*failed*/) { return false; }
  // The operation goes on after its call returned: from now on it acts on
  // copies of its own. Fails (as a step does) when a copy cannot be made.
  virtual Step Detach() { return {}; }
};

class SendWork : public Work {
 public:
  // `fds` is read until Detach (or the end of the call, if sooner).
  SendWork(int sock, Bytes data, const FdList& fds, Framing framing)
      : sender_(sock, data.data, data.len, fds.fds, fds.count, framing) {}
  Step Start() override { return sender_.start(); }
  Step Next() override { return sender_.step(); }
  int Fd() const override { return sender_.socket(); }
  Napi::Value Result(Napi::Env env) override {
    return Napi::Number::New(env, static_cast<double>(sender_.bytes_sent()));
  }
  bool MidMessage() const override { return sender_.mid_message(); }
  // Copies of the fds while they are still to be sent (the first sendmsg
  // takes them, all or nothing), of the socket, and of the bytes left.
  // Every number is open: the kernel looked each fd up before it answered
  // EAGAIN, and no JS ran since, so no copy can take the number of another.
  Step Detach() override {
    try {
      sender_.own_bytes();
      std::vector<UniqueFd> copies;
      std::vector<int> fds;
      copies.reserve(sender_.fd_count() + 1);
      fds.reserve(sender_.fd_count());
      if (!sender_.fds_sent()) {
        for (size_t i = 0; i < sender_.fd_count(); ++i) {
          int copy = dup_cloexec(sender_.fds()[i]);
          if (copy < 0) return {-copy, 0, "sendmsg"};
          fds.push_back(copies.emplace_back(copy).get());
        }
      }
      int sock = dup_cloexec(sender_.socket());
      if (sock < 0) return {-sock, 0, "fcntl"};
      copies.emplace_back(sock);
      if (!sender_.fds_sent()) sender_.set_fds(std::move(fds));
      sender_.set_socket(sock);
      copies_ = std::move(copies);
      return {};
    } catch (const std::bad_alloc&) {
      return {ENOMEM, 0, "sendmsg"};
    }
  }

 private:
  std::vector<UniqueFd> copies_;  // Kept open until done.
  FdSender sender_;
};

// Where a receive done within its call puts its result for the TypeScript
// layer to read at once, in place of an object, a Buffer and an array made
// through N-API (which cost more than the syscalls): the bytes in `data`,
// and in `meta` the status, fds dropped, length, outOfStep, the fd count
// (kRecvMetaHeader numbers), then the fds. Both belong to the caller, who
// sized them for maxBytes and maxFds.
struct RecvInto {
  uint8_t* data = nullptr;
  int32_t* meta = nullptr;
};
inline constexpr size_t kRecvMetaHeader = 5;

class RecvWork : public Work {
 public:
  RecvWork(int sock, size_t max_bytes, size_t max_fds, Framing framing, RecvInto into)
      : receiver_(sock, max_bytes, max_fds, framing), into_(into) {
    receiver_.set_room(into.data);  // A record is read straight into the caller's bytes.
  }
  Step Start() override { return receiver_.start(); }
  Step Next() override { return receiver_.step(); }
  int Fd() const override { return receiver_.socket(); }
  Step Detach() override {
    into_ = {};  // The caller's buffers may be in use again when this ends.
    receiver_.set_room(nullptr);
    int copy = dup_cloexec(receiver_.socket());
    if (copy < 0) return {-copy, 0, "fcntl"};
    copy_.reset(copy);
    receiver_.set_socket(copy);
    return {};
  }
  bool HasUnwanted(bool failed) override {
    return !receiver_.unwanted().empty() || (failed && !receiver_.fds().empty());
  }
  // { status, data, fds, dropped, length, outOfStep }, or the byte count
  // with the rest written where `into` says.
  Napi::Value Result(Napi::Env env) override {
    if (into_.data != nullptr) return ResultInto(env);
    Napi::Array names = Data(env).result_names.Value();
    auto name = [&names](ResultName n) { return names.Get(static_cast<uint32_t>(n)); };
    Napi::Object out = Napi::Object::New(env);
    std::vector<uint8_t>& data = receiver_.data();
    out.Set(name(kStatus), Napi::Number::New(env, static_cast<double>(receiver_.status())));
    out.Set(name(kData), Napi::Buffer<uint8_t>::Copy(env, data.data(), data.size()));
    Napi::Array fds = Napi::Array::New(env, receiver_.fds().size());
    for (size_t i = 0; i < receiver_.fds().size(); ++i) {
      fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, receiver_.fds()[i].get()));
    }
    out.Set(name(kFds), fds);
    out.Set(name(kDropped), Napi::Number::New(env, static_cast<double>(receiver_.dropped_fds())));
    out.Set(name(kLength), Napi::Number::New(env, static_cast<double>(receiver_.message_len())));
    out.Set(name(kOutOfStep), Napi::Boolean::New(env, receiver_.out_of_step()));
    return out;
  }
  void HandOver() override {
    for (UniqueFd& fd : receiver_.fds()) fd.release();
  }
  bool MidMessage() const override { return receiver_.mid_message(); }
  std::vector<UniqueFd> TakeUnwanted(bool failed) override {
    if (failed) receiver_.drop_received();
    return std::exchange(receiver_.unwanted(), {});
  }

 private:
  Napi::Value ResultInto(Napi::Env env) {
    std::vector<uint8_t>& data = receiver_.data();
    size_t length = receiver_.in_place() ? receiver_.placed() : data.size();
    if (!receiver_.in_place()) std::copy(data.begin(), data.end(), into_.data);  // At most maxBytes: the caller's room.
    const std::vector<UniqueFd>& fds = receiver_.fds();
    into_.meta[0] = static_cast<int32_t>(receiver_.status());
    into_.meta[1] = static_cast<int32_t>(receiver_.dropped_fds());
    into_.meta[2] = static_cast<int32_t>(std::min<size_t>(receiver_.message_len(), INT32_MAX));
    into_.meta[3] = receiver_.out_of_step() ? 1 : 0;
    into_.meta[4] = static_cast<int32_t>(fds.size());  // At most maxFds: the caller's room.
    for (size_t i = 0; i < fds.size(); ++i) into_.meta[kRecvMetaHeader + i] = fds[i].get();
    return Napi::Number::New(env, static_cast<double>(length));
  }

  UniqueFd copy_;  // Declared before the receiver: outlives its use there.
  FdReceiver receiver_;
  RecvInto into_;
};

// Waits until an fd is readable or hung up (the barrier's pipe: EOF): on
// the caller's number (sync), or on a copy it owns (Promise).
class WaitWork : public Work {
 public:
  explicit WaitWork(int fd) : fd_(fd) {}
  explicit WaitWork(UniqueFd copy) : copy_(std::move(copy)), fd_(copy_.get()) {}
  Step Start() override { return {}; }
  Step Next() override {
    int revents = wait_fd(fd_, POLLIN, 0);
    if (revents < 0) return {-revents, 0, "poll"};
    return revents ? Step{} : Step{EAGAIN, POLLIN, ""};
  }
  int Fd() const override { return fd_; }
  Napi::Value Result(Napi::Env env) override { return Napi::Boolean::New(env, true); }

 private:
  UniqueFd copy_;
  int fd_;
};

// The error for a failed step; `outOfStep` tells the TypeScript layer the
// stream stopped in the middle of a message.
Napi::Error StepError(Napi::Env env, const Work& work, int err, const char* syscall) {
  if (!work.MidMessage()) return ErrnoError(env, err, syscall);
  // The system error itself carries outOfStep, which the factory's would not.
  Napi::Error error = ErrnoError(env, err, syscall, /*factory=*/false);
  error.Set("outOfStep", true);
  return error;
}

// Throws StepError's error into JS (no C++ exception); returns the empty value to return.
Napi::Value ThrowStep(Napi::Env env, const Work& work, int err, const char* syscall) {
  if (!work.MidMessage()) return ThrowErrno(env, err, syscall);
  StepError(env, work, err, syscall).ThrowAsJavaScriptException();
  return Napi::Value();
}

// ---- synchronous runner ---------------------------------------------------

int64_t NowMs() { return static_cast<int64_t>(uv_hrtime() / 1000000); }

// Steps `work` to the end, blocking in poll() between steps. A timeout
// (ms >= 0) bounds the whole operation and ends in ETIMEDOUT.
Napi::Value RunBlocking(Napi::Env env, Work& work, int timeout_ms) {
  int64_t deadline = timeout_ms < 0 ? -1 : NowMs() + timeout_ms;
  Step s = work.Start();
  if (s.err) return ThrowStep(env, work, s.err, s.syscall);
  for (;;) {
    s = work.Next();
    if (s.err == 0) {
      Napi::Value result = work.Result(env);
      work.HandOver();  // Returned to JS below: nothing can fail after this.
      return result;
    }
    if (s.err != EAGAIN) return ThrowStep(env, work, s.err, s.syscall);
    int left = deadline < 0 ? -1 : static_cast<int>(std::max<int64_t>(0, deadline - NowMs()));
    int revents = wait_fd(work.Fd(), s.events, left);
    if (revents < 0) throw StepError(env, work, -revents, "poll");
    if (revents == 0) throw StepError(env, work, ETIMEDOUT, "poll");
  }
}

// ---- event-loop runner ----------------------------------------------------

// The fds a receive took in and does not hand to JS are closed by one
// thread of their own, never on the event loop: each may be the last
// reference to a peer's file, whose release runs in the closing thread and
// can block for as long as the peer likes (a TCP socket with SO_LINGER and
// unsent data waits out its linger time). Not on the libuv thread pool
// either: a few such files would hold all of its threads, and with them
// every fs, dns and crypto call of the process. One thread for the whole
// process bounds what a peer can hold to that thread: receives that drop
// fds wait their turn behind a blocked close, nothing else does.
class FdCloser {
 public:
  // Closes `fds`, then calls `then` on the closer's thread. Throws
  // (std::system_error, std::bad_alloc) if it cannot take them.
  static void Close(std::vector<UniqueFd>& fds, std::function<void()> then) {
    // Never destroyed: its thread may still be in a close() at exit.
    static FdCloser* closer = new FdCloser();
    closer->Queue(fds, std::move(then));
  }

 private:
  struct Job {
    std::vector<UniqueFd> fds;
    std::function<void()> then;
  };

  void Queue(std::vector<UniqueFd>& fds, std::function<void()> then) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!started_) {
      std::thread([this] { Run(); }).detach();
      started_ = true;
    }
    jobs_.push_back({{}, std::move(then)});
    jobs_.back().fds = std::move(fds);  // Taken only once nothing can throw.
    wake_.notify_one();
  }

  [[noreturn]] void Run() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return !jobs_.empty(); });
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job.fds.clear();
      job.then();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;
  bool started_ = false;
};

// Wakes the event loop once from another thread (Send), and runs `done`
// there. Made, run and shut on the JS thread; if the environment goes away
// first, the handle is closed, `done` dropped, and Send does nothing. The
// sender's reference may outlive the handle: it then holds nothing of JS.
class LoopWake {
 public:
  using Done = std::function<void()>;

  // Null if no handle could be made.
  static std::shared_ptr<LoopWake> Open(napi_env env, Done done) {
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) return nullptr;
    std::shared_ptr<LoopWake> wake(new LoopWake(env, std::move(done)));
    if (uv_async_init(loop, &wake->async_, OnAsync) < 0) return nullptr;
    wake->async_.data = wake.get();
    wake->open_ = true;
    wake->self_ = wake;  // Until the handle is closed.
    napi_add_async_cleanup_hook(env, OnCleanup, wake.get(), &wake->hook_);
    return wake;
  }

  void Send() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (open_) uv_async_send(&async_);
  }

  // Never runs `done` (JS thread): nothing will be sent, or no JS may run.
  void Cancel() {
    Drop(std::move(done_));
    Shut();
  }

 private:
  LoopWake(napi_env env, Done done) : env_(env), done_(std::move(done)) {}

  static void OnAsync(uv_async_t* handle) {
    auto* wake = static_cast<LoopWake*>(handle->data);
    Done done = std::move(wake->done_);
    wake->Shut();
    if (done) done();
    wake->Drop(std::move(done));
  }

  static void OnCleanup(napi_async_cleanup_hook_handle, void* arg) { static_cast<LoopWake*>(arg)->Cancel(); }

  // Destroys `done` (and the JS objects it holds) in a handle scope: the C
  // API's, whose failure while the environment is torn down throws nothing.
  void Drop(Done done) {
    napi_handle_scope scope = nullptr;
    bool scoped = napi_open_handle_scope(env_, &scope) == napi_ok;
    done = nullptr;
    if (scoped) napi_close_handle_scope(env_, scope);
  }

  void Shut() {
    bool was_open;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      was_open = std::exchange(open_, false);
    }
    if (was_open) uv_close(reinterpret_cast<uv_handle_t*>(&async_), OnClosed);
  }

  static void OnClosed(uv_handle_t* handle) {
    auto* wake = static_cast<LoopWake*>(handle->data);
    napi_remove_async_cleanup_hook(wake->hook_);
    wake->self_.reset();  // The sender may hold the last reference.
  }

  napi_env env_;
  Done done_;
  std::mutex mutex_;
  uv_async_t async_{};
  bool open_ = false;
  napi_async_cleanup_hook_handle hook_ = nullptr;
  std::shared_ptr<LoopWake> self_;
};

// One pending operation on the event loop. It keeps itself alive (self_)
// while its uv_poll_t is open and lets go in the close callback. The
// Promise carries a cancel() that holds only a weak reference.
//
// The libuv callbacks catch every exception: one escaping them would end
// the process. What cannot be reported to JS (the environment is going
// away) is dropped, and the work's destructor closes every fd it held.
class PollOp : public std::enable_shared_from_this<PollOp> {
 public:
  static Napi::Value Run(Napi::Env env, std::unique_ptr<Work> work) {
    std::shared_ptr<PollOp> op = Make(env, std::move(work));
    op->Begin();
    return op->deferred_.Promise();
  }

  // Goes on with an operation already tried once, whose last step was `s`:
  // waits for readiness (EAGAIN), or closes the fds it will not hand over
  // off the loop before settling.
  static Napi::Value Resume(Napi::Env env, std::unique_ptr<Work> work, Step s) {
    std::shared_ptr<PollOp> op = Make(env, std::move(work));
    if (s.err == EAGAIN) {
      op->Wait(s.events);
    } else {
      op->Finish(s.err, s.syscall);
    }
    return op->deferred_.Promise();
  }

 private:
  static std::shared_ptr<PollOp> Make(Napi::Env env, std::unique_ptr<Work> work) {
    std::shared_ptr<PollOp> op(new PollOp(env, std::move(work)));
    Napi::Promise promise = op->deferred_.Promise();
    std::weak_ptr<PollOp> weak = op;
    // cancel([errno]): rejects with ECANCELED, or the errno given (ETIMEDOUT).
    promise.Set("cancel", Napi::Function::New(env, [weak](const Napi::CallbackInfo& info) {
                  int err = info.Length() > 0 ? ArgInt32InRange(info, 0, "errno", 1, 4095) : ECANCELED;
                  if (auto live = weak.lock()) live->Fail(err, "poll");
                  return info.Env().Undefined();
                }));
    return op;
  }

  PollOp(Napi::Env env, std::unique_ptr<Work> work)
      : env_(env), deferred_(Napi::Promise::Deferred::New(env)),
        context_(env, "liveupdate.fdpass"), work_(std::move(work)) {}

  void Begin() {
    Step s = work_->Start();
    if (s.err) return Fail(s.err, s.syscall);
    Advance();
  }

  // Tries the operation; finishes, or (re)arms the poll handle.
  void Advance() {
    Step s = work_->Next();
    if (s.err == EAGAIN) return Wait(s.events);
    Finish(s.err, s.syscall);
  }

  // The operation is over (err 0: it succeeded). The fds it received and
  // will not hand to JS are closed by the FdCloser, and the Promise
  // settles after that, so a caller that hears of the result finds them
  // closed. A cancel from then on comes too late: the message is read.
  void Finish(int err, const char* syscall) {
    if (finishing_ || settled_) return;
    std::vector<UniqueFd> unwanted = work_->TakeUnwanted(err != 0);
    if (unwanted.empty()) return Conclude(err, syscall);
    finishing_ = true;
    if (open_) uv_poll_stop(&poll_);
    std::shared_ptr<PollOp> self = shared_from_this();
    std::shared_ptr<LoopWake> wake = LoopWake::Open(env_, [self, err, syscall] { self->ConcludeOnLoop(err, syscall); });
    try {
      if (!wake) throw std::bad_alloc();
      FdCloser::Close(unwanted, [wake] { wake->Send(); });
    } catch (...) {
      // No closer thread (out of threads or memory): close them here.
      if (wake) wake->Cancel();
      unwanted.clear();
      Conclude(err, syscall);
    }
  }

  // Conclude from a libuv callback: in scopes, and nothing thrown out.
  void ConcludeOnLoop(int err, const char* syscall) {
    try {
      Napi::HandleScope scope(env_);
      Napi::CallbackScope callback(env_, context_);
      Conclude(err, syscall);
    } catch (...) {
      Settle(Napi::Value(), false);
    }
  }

  void Conclude(int err, const char* syscall) {
    if (settled_) return;  // The environment went away meanwhile.
    if (err) return Settle(StepError(env_, *work_, err, syscall).Value(), false);
    Napi::Value result;
    try {
      result = work_->Result(env_);
    } catch (const Napi::Error& e) {
      return Settle(e.Value(), false);
    }
    Settle(result, true);
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
    try {
      Napi::HandleScope scope(op->env_);
      // Settling inside a callback scope runs the Promise reactions now,
      // not at whatever JS happens to run next.
      Napi::CallbackScope callback(op->env_, op->context_);
      // libuv reports every EPOLLERR as UV_EBADF, a peer's reset too: the
      // step reads the socket's own error (or its EOF) instead. Only an
      // error wake twice in a row with nothing to read is taken as is.
      if (status < 0 && op->error_wake_) return op->Fail(-status, "poll");
      op->error_wake_ = status < 0;
      op->Advance();
    } catch (...) {
      op->Settle(Napi::Value(), false);  // Fails to reach JS; closes everything.
    }
  }

  void Fail(int err, const char* syscall) { Finish(err, syscall); }

  // Never throws: a Promise that cannot be settled (the environment is
  // going away) is left, and what the work owns is closed all the same.
  void Settle(Napi::Value value, bool ok) {
    if (settled_) return;
    settled_ = true;
    try {
      if (ok) {
        deferred_.Resolve(value);
        work_->HandOver();
      } else {
        deferred_.Reject(value);
      }
    } catch (...) {
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
    napi_env env = op->env_;
    // Removing the hook tells a closing environment this operation is done.
    napi_remove_async_cleanup_hook(op->cleanup_);
    // The C API, not Napi::HandleScope: its constructor throws when the
    // environment is being torn down, and nothing may throw here.
    napi_handle_scope scope = nullptr;
    bool scoped = napi_open_handle_scope(env, &scope) == napi_ok;
    op->self_.reset();  // Frees op.
    if (scoped) napi_close_handle_scope(env, scope);
  }

  Napi::Env env_;
  Napi::Promise::Deferred deferred_;
  Napi::AsyncContext context_;
  std::unique_ptr<Work> work_;
  uv_poll_t poll_{};
  napi_async_cleanup_hook_handle cleanup_ = nullptr;
  bool open_ = false;
  bool settled_ = false;
  bool finishing_ = false;
  bool error_wake_ = false;
  std::shared_ptr<PollOp> self_;
};

// ---- readiness watchers kept across waits ---------------------------------

class ReadableWatch;

// The readiness set of an environment: one epoll fd (ready_set_open) on the
// event loop through one uv_poll_t, for every ReadableWatch made in it. A
// watch re-arms its own entry with one syscall per wait, and one wake of
// the loop settles every wait that became ready meanwhile. The handle holds
// the loop alive only while a wait is pending, as a watcher per wait did;
// the set is open while some watch is.
// Node runs each environment on a thread of its own: the set is per thread,
// checked against the environment asking (as Rooms is).
class ReadySet : public std::enable_shared_from_this<ReadySet> {
 public:
  // The environment's set, opened with its first watch. Throws ErrnoError.
  static std::shared_ptr<ReadySet> For(Napi::Env env) {
    if (current && current->env_ == static_cast<napi_env>(env) && current->open_) return current;
    std::shared_ptr<ReadySet> set(new ReadySet(env));
    set->Open();
    current = set;
    return set;
  }

  int fd() const { return fd_.get(); }
  bool open() const { return open_; }

  uint64_t Join(ReadableWatch* watch) {
    watches_[++last_id_] = watch;
    return last_id_;
  }
  // The last watch leaving closes the set: nothing stays open once nothing is watched.
  void Leave(uint64_t id) {
    watches_.erase(id);
    if (watches_.empty()) Shut();
  }

  // A wait began, or ended: the loop is held while any is pending.
  void Hold() {
    if (pending_++ == 0 && open_) uv_ref(Handle());
  }
  void Release() {
    if (--pending_ == 0 && open_) uv_unref(Handle());
  }

 private:
  explicit ReadySet(napi_env env) : env_(env) {}

  uv_handle_t* Handle() { return reinterpret_cast<uv_handle_t*>(&poll_); }

  void Open() {
    int fd = ready_set_open();
    if (fd < 0) throw ErrnoError(env_, -fd, "epoll_create1");
    fd_.reset(fd);
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env_, &loop);
    int rc = uv_poll_init(loop, &poll_, fd);
    if (rc < 0) throw ErrnoError(env_, -rc, "uv_poll_init");
    poll_.data = this;
    open_ = true;
    self_ = shared_from_this();
    // A Worker must not find the handle open when it closes its loop.
    napi_add_async_cleanup_hook(env_, OnCleanup, this, &hook_);
    rc = uv_poll_start(&poll_, UV_READABLE, OnReady);
    if (rc < 0) {
      Shut();
      throw ErrnoError(env_, -rc, "uv_poll_start");
    }
    uv_unref(Handle());
    context_.emplace(env_, "liveupdate:readable");
  }

  static void OnReady(uv_poll_t* handle, int, int);

  static void OnCleanup(napi_async_cleanup_hook_handle, void* arg) { static_cast<ReadySet*>(arg)->Shut(); }

  // Closes the handle, and the epoll fd at once: uv_close takes it off the
  // loop's epoll set now and libuv does not touch it after (the memory lives
  // until OnClosed). A watch left (at teardown) only finds its calls fail.
  void Shut() {
    if (!open_) return;
    open_ = false;
    context_.reset();
    if (current.get() == this) current.reset();
    uv_close(Handle(), OnClosed);
    fd_.reset();
  }

  static void OnClosed(uv_handle_t* handle) {
    auto* set = static_cast<ReadySet*>(handle->data);
    if (set->hook_ != nullptr) napi_remove_async_cleanup_hook(set->hook_);
    set->self_.reset();  // May free the set.
  }

  static thread_local std::shared_ptr<ReadySet> current;
  napi_env env_;
  UniqueFd fd_;
  uv_poll_t poll_{};
  bool open_ = false;
  size_t pending_ = 0;
  std::optional<Napi::AsyncContext> context_;
  std::unordered_map<uint64_t, ReadableWatch*> watches_;
  uint64_t last_id_ = 0;
  napi_async_cleanup_hook_handle hook_ = nullptr;
  std::shared_ptr<ReadySet> self_;  // While the handle is open.
};

thread_local std::shared_ptr<ReadySet> ReadySet::current;

// new ReadableWatch(fd): waits, one after another, for a socket to be
// readable or hung up, for as long as the socket is in use: what a
// connection that waits for each of its messages keeps, in place of a
// watcher (a dup, a libuv handle's set-up and close) per wait. It watches
// its own F_DUPFD_CLOEXEC copy of the file `fd` was at construction: a
// caller that closes its fd and reuses the number does not make it watch
// another file, and it holds the file open until close() (the peer sees
// no hang-up before it), or until it is collected.
//
//   wait(): a Promise of true (readable, or hung up) or false (cancelled,
//     closed, or the wait could not be armed); one at a time. A pending
//     wait keeps the object, and the event loop, alive.
//   cancel(): settles a pending wait with false.
//   close(): cancels, and closes the copy; a later wait() is false.
class ReadableWatch : public Napi::ObjectWrap<ReadableWatch> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ReadableWatch",
                       {InstanceMethod<&ReadableWatch::Wait>("wait"), InstanceMethod<&ReadableWatch::Cancel>("cancel"),
                        InstanceMethod<&ReadableWatch::Close>("close")});
  }

  explicit ReadableWatch(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ReadableWatch>(info) {
    Guarded(info.Env(), "ReadableWatch", [&] {
      copy_ = DupArg(info.Env(), ArgFd(info, 0, "fd"));
      set_ = ReadySet::For(info.Env());
      id_ = set_->Join(this);
      return Napi::Value();
    });
  }

  // Collected, or its environment is going away: no JS may run, so a
  // pending wait (only at teardown: it holds the object) is dropped.
  ~ReadableWatch() override {
    if (waiting_) set_->Release();
    Forget();
  }

  // Its entry was reported: the pending wait, if any, is over.
  void Ready() { Settle(true); }

 private:
  Napi::Value Wait(const Napi::CallbackInfo& info) {
    return Guarded(info.Env(), "wait", [&]() -> Napi::Value {
      if (waiting_) throw Napi::Error::New(info.Env(), "a wait is already pending on this ReadableWatch");
      auto deferred = Napi::Promise::Deferred::New(info.Env());
      int rc = copy_.valid() && set_->open() ? ready_set_arm(set_->fd(), copy_.get(), id_, added_) : -EBADF;
      if (rc < 0) {
        deferred.Resolve(Napi::Boolean::New(info.Env(), false));
        return deferred.Promise();
      }
      added_ = true;
      waiting_.emplace(deferred);
      set_->Hold();
      Ref();
      return deferred.Promise();
    });
  }

  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    Settle(false);
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Settle(false);
    Forget();
    return info.Env().Undefined();
  }

  void Settle(bool readable) {
    if (!waiting_) return;
    Napi::Promise::Deferred deferred = std::move(*waiting_);
    waiting_.reset();
    set_->Release();
    Unref();
    deferred.Resolve(Napi::Boolean::New(deferred.Env(), readable));
  }

  // Out of the set before the copy is closed (ready_set_remove says why).
  // A construction that failed after the copy (no set could be opened) has
  // only the copy to close.
  void Forget() {
    if (!copy_.valid()) return;
    if (set_ != nullptr) {
      if (added_) ready_set_remove(set_->fd(), copy_.get());
      set_->Leave(id_);
    }
    copy_.reset();
  }

  std::shared_ptr<ReadySet> set_;
  UniqueFd copy_;
  uint64_t id_ = 0;
  bool added_ = false;
  std::optional<Napi::Promise::Deferred> waiting_;
};

// Settles the wait of every watch reported: the reactions run as the
// callback scope closes, together.
void ReadySet::OnReady(uv_poll_t* handle, int, int) {
  auto* set = static_cast<ReadySet*>(handle->data);
  if (!set->open_) return;
  try {
    Napi::HandleScope scope(set->env_);
    Napi::CallbackScope callback(set->env_, *set->context_);
    constexpr int kBatch = 64;
    uint64_t ids[kBatch];
    int n;
    do {
      n = ready_set_take(set->fd(), ids, kBatch);
      for (int i = 0; i < n; ++i) {
        auto found = set->watches_.find(ids[i]);
        if (found != set->watches_.end()) found->second->Ready();
      }
    } while (n == kBatch);
  } catch (...) {
    // The environment is going away: nothing can be settled.
  }
}

// ---- exported functions ---------------------------------------------------

// sendFds(fd, data, fds, framing[, timeoutMs]), on the caller's numbers
// and bytes (see the top of this file for when they are copied); the fds
// are read into `fds`, which must outlive the call's first attempt.
SendWork MakeSend(const Napi::CallbackInfo& info, FdList& fds) {
  int sock = ArgFd(info, 0, "fd");
  Bytes data = ArgBytes(info, 1, "data");
  ArgFds(info, 2, "fds", fds);
  Framing framing = ArgFraming(info, 3);
  return SendWork(sock, data, fds, framing);
}

// A typed array of `type`: its data and element count, from one query.
void* ArgRoom(const Napi::CallbackInfo& info, size_t index, napi_typedarray_type type, const char* name, const char* expected, size_t& length) {
  napi_typedarray_type actual;
  void* data = nullptr;
  Napi::Value value = index < info.Length() ? info[index] : info.Env().Undefined();
  if (napi_get_typedarray_info(info.Env(), value, &actual, &length, &data, nullptr, nullptr) != napi_ok || actual != type) {
    ThrowArgType(info.Env(), name, expected);
  }
  return data;
}

// The typed arrays the TypeScript layer shares with this side, registered
// once per environment (setRooms), so that a call neither looks them up nor
// reads its numbers through N-API again: `data` and `meta`, where a receive
// given `into` writes its result (RecvInto); `args`, where the synchronous
// calls read their numbers (CallArg). References keep them alive; the
// environment's cleanup forgets them (a Worker's environment lives on its
// own thread). The references are the environment's, deleted with it.
struct Rooms {
  napi_env env = nullptr;
  napi_ref refs[3] = {};
  RecvInto into;
  int32_t* args = nullptr;
  size_t data_length = 0;
  size_t meta_length = 0;
  size_t args_length = 0;
};
thread_local Rooms rooms;

void ForgetRooms(void*) { rooms = {}; }

// The arrays registered in this environment, as [data, meta, args].
Napi::Value RegisteredRooms(Napi::Env env) {
  Napi::Array out = Napi::Array::New(env, 3);
  for (uint32_t i = 0; i < 3; ++i) {
    napi_value value = nullptr;
    NAPI_THROW_IF_FAILED(env, napi_get_reference_value(env, rooms.refs[i], &value), Napi::Value());
    out.Set(i, Napi::Value(env, value));
  }
  return out;
}

// setRooms(data, meta, args): a Uint8Array and two Int32Arrays; returns the
// arrays registered, [data, meta, args]. Once per environment: a later call
// (a second copy of the package in the process, sharing this addon) gets
// the first call's arrays back and registers nothing, so every call reads
// and writes where each copy does (one thread: no two calls at once).
Napi::Value SetRooms(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  Rooms room;
  room.env = env;
  room.into.data = static_cast<uint8_t*>(ArgRoom(info, 0, napi_uint8_array, "data", "an instance of Uint8Array", room.data_length));
  room.into.meta = static_cast<int32_t*>(ArgRoom(info, 1, napi_int32_array, "meta", "an instance of Int32Array", room.meta_length));
  room.args = static_cast<int32_t*>(ArgRoom(info, 2, napi_int32_array, "args", "an instance of Int32Array", room.args_length));
  if (rooms.env == env) return RegisteredRooms(info.Env());
  for (uint32_t i = 0; i < 3; ++i) {
    if (napi_create_reference(env, info[i], 1, &room.refs[i]) != napi_ok) {
      while (i > 0) napi_delete_reference(env, room.refs[--i]);
      NAPI_THROW(Napi::Error::New(env), Napi::Value());
    }
  }
  napi_add_env_cleanup_hook(env, ForgetRooms, nullptr);
  rooms = room;
  return RegisteredRooms(info.Env());
}

// The result buffers of `registered`, for a receive of at most `max_bytes` and `max_fds`.
RecvInto RegisteredInto(Napi::Env env, const Rooms& registered, size_t max_bytes, size_t max_fds) {
  if (registered.env != static_cast<napi_env>(env)) ThrowArgType(env, "into", "false until setRooms was called");
  if (registered.data_length < max_bytes) ThrowArgRange(env, "maxBytes", "<= the registered data's length");
  if (registered.meta_length < kRecvMetaHeader + max_fds) ThrowArgRange(env, "maxFds", "<= the registered meta's length less 5");
  return registered.into;
}

// recvFds(fd, maxBytes, maxFds, framing[, into]): with `into` true, a
// receive done within the call writes its result into the buffers given to
// setRooms (RecvInto) and returns the byte count.
RecvInto ArgInto(const Napi::CallbackInfo& info, size_t index, size_t max_bytes, size_t max_fds) {
  bool registered = false;
  if (index >= info.Length() || info[index].IsUndefined()) return {};
  if (napi_get_value_bool(info.Env(), info[index], &registered) != napi_ok) ThrowArgType(info.Env(), "into", "of type boolean");
  if (!registered) return {};
  return RegisteredInto(info.Env(), rooms, max_bytes, max_fds);
}

// Where the synchronous calls given no numbers (sendFdsArgs, recvFdsArgs)
// find them in the registered `args`, as the TypeScript layer writes them
// (fdpass.ts, SEND_ARG and RECV_ARG): a store into an Int32Array there and
// a load here, in place of a number made and read through N-API for each.
// A send's bytes are in `data` when kSendLength is >= 0 (copied there by
// the TypeScript layer: a short message costs no typed array read through
// N-API), else in its argument.
enum CallArg : size_t {
  kSendFd = 0, kSendFraming, kSendTimeout, kSendLength, kSendFdCount, kSendFds,  // The fds from kSendFds on.
  kRecvFd = 0, kRecvMaxBytes, kRecvMaxFds, kRecvFraming, kRecvInto, kRecvArgs,
};

// This environment's rooms, their `args` holding at least `count` numbers.
const Rooms& RegisteredArgs(Napi::Env env, size_t count) {
  const Rooms& registered = rooms;  // One lookup of the thread's rooms.
  if (registered.env != static_cast<napi_env>(env)) ThrowArgType(env, "args", "registered by setRooms first");
  if (registered.args_length < count) ThrowArgRange(env, "args", "an Int32Array long enough for the call's numbers");
  return registered;
}

// A number of `args`, checked as ArgInt32InRange checks an argument: two
// comparisons, inline, the error built out of line.
inline int32_t ArgsInRange(Napi::Env env, int32_t value, const char* name, int32_t min, int32_t max) {
  if (value < min || value > max) ThrowIntOutOfRange(env, name, min, max);
  return value;
}

Framing ToFraming(Napi::Env env, int32_t value) {
  return ArgsInRange(env, value, "framing", 0, 1) == 1 ? Framing::kNone : Framing::kFrame;
}

// The first argument of a call, read only by a call that needs it (see RawEntry).
napi_value FirstArg(Napi::Env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg = nullptr;
  NAPI_THROW_IF_FAILED(env, napi_get_cb_info(env, info, &argc, &arg, nullptr, nullptr), nullptr);
  return arg;  // Undefined when not given (argc is left 0).
}

// sendFdsArgs([data]), its other numbers (and its bytes, if short) in the
// rooms; the fds are copied into `fds` (the caller's `args` may be written
// again once the call returns).
SendWork MakeSendArgs(Napi::Env env, napi_callback_info info, const Rooms& registered, FdList& fds) {
  const int32_t* args = registered.args;
  int sock = ArgsInRange(env, args[kSendFd], "fd", 0, INT32_MAX);
  int32_t length = ArgsInRange(env, args[kSendLength], "length", -1, static_cast<int32_t>(std::min<size_t>(registered.data_length, INT32_MAX)));
  Bytes data = length < 0 ? ArgBytes(env, FirstArg(env, info), "data") : Bytes{registered.into.data, static_cast<size_t>(length)};
  fds.count = static_cast<uint32_t>(ArgsInRange(env, args[kSendFdCount], "fds", 0, static_cast<int32_t>(kMaxFdsPerMessage)));
  for (uint32_t i = 0; i < fds.count; ++i) fds.fds[i] = ArgsInRange(env, args[kSendFds + i], "fds", 0, INT32_MAX);
  return SendWork(sock, data, fds, ToFraming(env, args[kSendFraming]));
}

// recvFdsArgs(), every number in `args`; `into` as for recvFds.
RecvWork MakeRecvArgs(Napi::Env env, const Rooms& registered) {
  const int32_t* args = registered.args;
  int sock = ArgsInRange(env, args[kRecvFd], "fd", 0, INT32_MAX);
  auto max_bytes = static_cast<size_t>(ArgsInRange(env, args[kRecvMaxBytes], "maxBytes", 0, INT32_MAX));
  auto max_fds = static_cast<size_t>(ArgsInRange(env, args[kRecvMaxFds], "maxFds", 0, static_cast<int32_t>(kMaxFdsPerMessage)));
  Framing framing = ToFraming(env, args[kRecvFraming]);
  RecvInto into = ArgsInRange(env, args[kRecvInto], "into", 0, 1) == 1 ? RegisteredInto(env, registered, max_bytes, max_fds) : RecvInto{};
  return RecvWork(sock, max_bytes, max_fds, framing, into);
}

RecvWork MakeRecv(const Napi::CallbackInfo& info) {
  int sock = ArgFd(info, 0, "fd");
  auto max_bytes = static_cast<size_t>(ArgInt32InRange(info, 1, "maxBytes", 0, INT32_MAX));
  auto max_fds = static_cast<size_t>(ArgInt32InRange(info, 2, "maxFds", 0, static_cast<int32_t>(kMaxFdsPerMessage)));
  Framing framing = ArgFraming(info, 3);
  RecvInto into = ArgInto(info, 4, max_bytes, max_fds);
  return RecvWork(sock, max_bytes, max_fds, framing, into);
}

// A Promise form: tries at once, on the caller's numbers. Done then, with
// no fd to close off the loop, it returns the result itself (or throws its
// error): no Promise, no copy. Otherwise the operation takes copies of
// what it acts on (Detach) and goes on on the event loop, and the return
// is a Promise with cancel().
template <typename W>
Napi::Value RunNowOrLater(Napi::Env env, W work) {
  Step s = work.Start();
  if (s.err == 0) s = work.Next();
  if (s.err == EAGAIN) {
    // A copy that cannot be made fails the operation as a step would: what
    // it received is closed off the loop, a stream left mid-message is
    // reported out of step.
    Step copied = work.Detach();
    if (copied.err != 0) s = copied;
  }
  bool failed = s.err != 0 && s.err != EAGAIN;
  if (s.err != EAGAIN && !work.HasUnwanted(failed)) {
    if (failed) return ThrowStep(env, work, s.err, s.syscall);
    Napi::Value result = work.Result(env);
    work.HandOver();  // Returned to JS below: nothing can fail after this.
    return result;
  }
  // Detached (or done): it holds nothing of the caller's frame any more.
  return PollOp::Resume(env, std::make_unique<W>(std::move(work)), s);
}

// An optional timeout in ms: -1 (wait forever) when absent.
int ArgTimeout(const Napi::CallbackInfo& info, size_t index) {
  if (index >= info.Length() || info[index].IsUndefined()) return -1;
  return ArgInt32InRange(info, index, "timeoutMs", -1, INT32_MAX);
}

// A JS function for a call whose numbers are in the rooms, run Guarded
// (`What` names the call in an error of its own): it reads an argument
// itself, only when it has one (FirstArg). Napi::CallbackInfo would query
// every argument, `this` and the data on every call, about 100
// instructions a call.
template <Napi::Value (*Body)(Napi::Env, napi_callback_info), const char* What>
napi_value RawEntry(napi_env env, napi_callback_info info) {
  try {
    return Guarded(env, What, [&] { return Body(env, info); });
  } catch (...) {
    return ThrowCaught(env);
  }
}

constexpr char kSendFdsName[] = "sendFds";
constexpr char kRecvFdsName[] = "recvFds";

Napi::Value SendFdsArgs(Napi::Env env, napi_callback_info info) {
  const Rooms& registered = RegisteredArgs(env, kSendFds + kMaxFdsPerMessage);
  int timeout = ArgsInRange(env, registered.args[kSendTimeout], "timeoutMs", -1, INT32_MAX);
  FdList fds;
  SendWork work = MakeSendArgs(env, info, registered, fds);
  return RunBlocking(env, work, timeout);
}

Napi::Value RecvFdsArgs(Napi::Env env, napi_callback_info) {
  RecvWork work = MakeRecvArgs(env, RegisteredArgs(env, kRecvArgs));
  return RunBlocking(env, work, -1);
}

// The work of a synchronous call lives in its frame; a Promise form's
// moves to the heap only if it must wait (RunNowOrLater).
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  int timeout = ArgTimeout(info, 4);
  FdList fds;
  SendWork work = MakeSend(info, fds);
  return RunBlocking(info.Env(), work, timeout);
}

Napi::Value SendFdsAsync(const Napi::CallbackInfo& info) {
  FdList fds;
  return RunNowOrLater(info.Env(), MakeSend(info, fds));
}

Napi::Value RecvFds(const Napi::CallbackInfo& info) {
  RecvWork work = MakeRecv(info);
  return RunBlocking(info.Env(), work, -1);
}

Napi::Value RecvFdsAsync(const Napi::CallbackInfo& info) { return RunNowOrLater(info.Env(), MakeRecv(info)); }

// waitReadable(fd, timeoutMs): true when readable or hung up; ETIMEDOUT.
Napi::Value WaitReadable(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  int timeout = ArgInt32InRange(info, 1, "timeoutMs", -1, INT32_MAX);
  WaitWork work(fd);
  return RunBlocking(info.Env(), work, timeout);
}

Napi::Value WaitReadableAsync(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  return PollOp::Run(info.Env(), std::make_unique<WaitWork>(DupArg(info.Env(), fd)));
}

// readableNow(fd): whether a message, a connection or EOF waits on `fd`,
// without waiting. "Not yet" is an answer, not an error: a server asks
// this once per request and per accept.
Napi::Value ReadableNow(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0, "fd");
  int revents = wait_fd(fd, POLLIN, 0);
  if (revents < 0) throw ErrnoError(info.Env(), -revents, "poll");
  return Napi::Boolean::New(info.Env(), revents != 0);
}

// ---- small socket helpers (sync + Async) ----------------------------------

// Two new fds as a JS array: [socketpair end 0, end 1] or [read end, write
// end], owned here until JS has them.
struct FdPair {
  UniqueFd fds[2];
  int Adopt(int rc, const int (&raw)[2]) {
    if (rc >= 0) {
      fds[0].reset(raw[0]);
      fds[1].reset(raw[1]);
    }
    return rc;
  }
};

// Found by RunSync through argument-dependent lookup (FdPair lives here).
Napi::Value ToJs(Napi::Env env, const FdPair& pair) {
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, pair.fds[0].get()));
  out.Set(1u, Napi::Number::New(env, pair.fds[1].get()));
  return out;
}

void HandOver(FdPair& pair) {
  pair.fds[0].release();
  pair.fds[1].release();
}

Call<FdPair> PrepareSocketPair(const Napi::CallbackInfo& info, FdArgs) {
  int type = ArgInt32(info, 0, "type");
  return {"socketpair", [type](FdPair& pair) {
            int raw[2] = {-1, -1};
            return pair.Adopt(unix_socket_pair(type, raw), raw);
          }};
}

Call<FdPair> PreparePipe(const Napi::CallbackInfo&, FdArgs) {
  return {"pipe2", [](FdPair& pair) {
            int raw[2] = {-1, -1};
            return pair.Adopt(pipe_cloexec(raw), raw);
          }};
}

Call<NewFd> PrepareUnixBind(const Napi::CallbackInfo& info, FdArgs) {
  int type = ArgInt32(info, 0, "type");
  std::string path = ArgString(info, 1, "path");
  return {"bind", [type, path](NewFd& out) { return out.Adopt(unix_bind(type, path)); }};
}

Call<NewFd> PrepareUnixConnect(const Napi::CallbackInfo& info, FdArgs) {
  int type = ArgInt32(info, 0, "type");
  std::string path = ArgString(info, 1, "path");
  return {"connect", [type, path](NewFd& out) { return out.Adopt(unix_connect(type, path)); }};
}

Call<NewFd> PrepareUnixAccept(const Napi::CallbackInfo& info, FdArgs fds) {
  int fd = ArgFd(info, 0, "fd");
  fd = fds.Use(info.Env(), fd, "accept4");
  return {"accept4", [fd](NewFd& out) { return out.Adopt(unix_accept(fd)); }, std::move(fds)};
}

Call<int> PrepareSocketType(const Napi::CallbackInfo& info, FdArgs fds) {
  int fd = ArgFd(info, 0, "fd");
  fd = fds.Use(info.Env(), fd, "getsockopt");
  return {"getsockopt", [fd](int& type) { return type = socket_type(fd); }, std::move(fds)};
}

// pinFds(fds): close-on-exec copies of the fds, for the TypeScript layer to
// hold the files of a call it queues, as an array of the copies' numbers.
// The array owns them: unpinFds(array) closes them, and if that never
// happens (the Worker dies first, or the array is dropped) its finalizer
// does. Synchronous only: a copy made later could be of another file.
Napi::Value PinFds(const Napi::CallbackInfo& info) {
  // A message's fds and the socket that sends them.
  std::vector<int> fds = ArgFds(info, 0, "fds", kMaxFdsPerMessage + 1);
  auto copies = std::make_unique<FdArgs>(When::kQueued);
  copies->CheckOpen(info.Env(), fds, "fcntl");
  Napi::Array out = Napi::Array::New(info.Env(), fds.size());
  for (uint32_t i = 0; i < fds.size(); ++i) out.Set(i, Napi::Number::New(info.Env(), copies->Use(info.Env(), fds[i], "fcntl")));
  auto finalize = [](napi_env, void* data, void*) { delete static_cast<FdArgs*>(data); };
  NAPI_THROW_IF_FAILED(info.Env(), napi_wrap(info.Env(), out, copies.get(), finalize, nullptr, nullptr), Napi::Value());
  copies.release();  // The array's finalizer owns it now.
  return out;
}

Napi::Value UnpinFds(const Napi::CallbackInfo& info) {
  void* data = nullptr;
  if (!info[0].IsArray() || napi_remove_wrap(info.Env(), info[0], &data) != napi_ok) {
    ThrowArgType(info.Env(), "pinned", "an array made by pinFds");
  }
  delete static_cast<FdArgs*>(data);
  return info.Env().Undefined();
}

// FD_CLOEXEC belongs to the fd number, not the file: these act on the
// number itself, so they exist only in the synchronous form.
Call<int> PrepareSetCloexec(const Napi::CallbackInfo& info, FdArgs) {
  int fd = ArgFd(info, 0, "fd");
  bool on = ArgBool(info, 1, "on");
  return {"fcntl", [fd, on](int&) { return set_cloexec(fd, on); }};
}

Call<int> PrepareGetCloexec(const Napi::CallbackInfo& info, FdArgs) {
  int fd = ArgFd(info, 0, "fd");
  return {"fcntl", [fd](int& on) { return on = get_cloexec(fd); }};
}

// Whether setPassRights took effect: false on a kernel without the option.
struct PassRights {
  bool known = false;
};

Napi::Value ToJs(Napi::Env env, const PassRights& rights) { return Napi::Boolean::New(env, rights.known); }
void HandOver(PassRights&) {}

// setPassRights(fd, on): a socket option of the file, set at once; the
// agent calls it once on its listening socket.
Call<PassRights> PrepareSetPassRights(const Napi::CallbackInfo& info, FdArgs) {
  int fd = ArgFd(info, 0, "fd");
  bool on = ArgBool(info, 1, "on");
  return {"setsockopt", [fd, on](PassRights& out) {
            int rc = set_pass_rights(fd, on);
            out.known = rc == 1;
            return rc;
          }};
}

constexpr Export kExports[] = {
    Function<SendFds>("sendFds"),
    Function<SendFdsAsync>("sendFdsAsync"),
    Function<RecvFds>("recvFds"),
    Function<RecvFdsAsync>("recvFdsAsync"),
    // The synchronous forms again, their numbers read from `args` (CallArg).
    {"sendFdsArgs", RawEntry<SendFdsArgs, kSendFdsName>},
    {"recvFdsArgs", RawEntry<RecvFdsArgs, kRecvFdsName>},
    Function<WaitReadable>("waitReadable"),
    Function<WaitReadableAsync>("waitReadableAsync"),
    Function<ReadableNow>("readableNow"),
    // The errors of every call of the addon, not of fd passing alone.
    Function<SetErrorFactory>("setErrorFactory"),
    SyncAndAsyncCall<FdPair, PrepareSocketPair>("socketPair", "socketPairAsync"),
    SyncAndAsyncCall<FdPair, PreparePipe>("pipe", "pipeAsync"),
    SyncAndAsyncCall<NewFd, PrepareUnixBind>("unixBind", "unixBindAsync"),
    SyncAndAsyncCall<NewFd, PrepareUnixConnect>("unixConnect", "unixConnectAsync"),
    SyncAndAsyncCall<NewFd, PrepareUnixAccept>("unixAccept", "unixAcceptAsync"),
    SyncAndAsyncCall<int, PrepareSocketType>("socketType", "socketTypeAsync"),
    Function<PinFds>("pinFds"),
    Function<SetRooms>("setRooms"),
    Function<UnpinFds>("unpinFds"),
    SyncCall<int, PrepareSetCloexec>("setCloexec"),
    SyncCall<int, PrepareGetCloexec>("getCloexec"),
    SyncCall<PassRights, PrepareSetPassRights>("setPassRights"),
};

}  // namespace

void RegisterFdPass(Napi::Env env, Napi::Object exports) {
  MakeResultNames(env);
  DefineExports(env, exports, kExports);
  exports.Set("ReadableWatch", ReadableWatch::Define(env));
  exports.Set("SOCK_STREAM", static_cast<double>(SOCK_STREAM));
  exports.Set("SOCK_DGRAM", static_cast<double>(SOCK_DGRAM));
  exports.Set("SOCK_SEQPACKET", static_cast<double>(SOCK_SEQPACKET));
}

}  // namespace lu::napi
