// The base of every promise-returning native call: Work() runs on the libuv thread pool and
// never touches N-API; every C++ exception becomes a rejected Promise.
#pragma once

#include <napi.h>

#include <c10/util/Exception.h>

#include <new>
#include <string>

namespace qwen3 {

// Base for promise-returning workers: runs `Work()` on the libuv pool and turns every kind of
// C++ exception into a rejection, so no libtorch error can abort the process.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* name) : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  virtual void Work() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;
  // Runs on the JS thread once the Promise is settled (or could not be), before the worker goes.
  virtual void Finished() {}

  void Execute() override {
    try {
      Work();
      return;
    } catch (const c10::Error& e) {
      error_ = e.what_without_backtrace();
    } catch (const std::bad_alloc&) {
      error_ = "Out of memory";
    } catch (const std::exception& e) {
      error_ = e.what();
    } catch (...) {
      error_ = "Unknown native error";
    }
    if (error_.empty()) error_ = "Unknown native error";
    failed_ = true;
  }

  // Replaces node-addon-api's completion, which turns a failed napi call into a C++ exception and,
  // when even throwing that into JS fails, lets it escape into Node: std::terminate. That is what
  // happens when the work outlives its JS environment. Node waits for pool work before it tears
  // an environment down (a terminated worker thread, process.exit() in a worker), then runs this
  // with JavaScript disabled, so resolving the promise cannot succeed and nobody could observe it.
  // Here every failure to settle is dropped, and the worker (with what it holds, an engine
  // included) is freed either way.
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    if (status != napi_cancelled) {
      try {
        Napi::HandleScope scope(env);
        Settle(env);
      } catch (...) {
        // The environment is shutting down: the promise has no one left to tell.
      }
    }
    Finished();
    Destroy();
  }

 private:
  void Settle(Napi::Env env) {
    if (failed_) {
      deferred_.Reject(Napi::Error::New(env, error_).Value());
      return;
    }
    try {
      deferred_.Resolve(Result(env));
    } catch (const Napi::Error& e) {
      // Building the result failed (a JS exception is pending, e.g. out of heap): reject with it.
      deferred_.Reject(e.Value());
    }
  }

  Napi::Promise::Deferred deferred_;
  std::string error_;
  bool failed_ = false;
};

}  // namespace qwen3
