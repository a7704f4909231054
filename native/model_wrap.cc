#include "model_wrap.h"

#include "model_workers.h"

namespace qwen3 {
namespace {

// lib/model.ts validates everything; these checks only keep a misuse of the raw binding from
// reading the wrong memory.
Napi::Object ObjectArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsObject()) throw Napi::TypeError::New(info.Env(), "Expected an options object");
  return info[i].As<Napi::Object>();
}

double NumberField(const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("Expected number for ") + key);
  return v.As<Napi::Number>().DoubleValue();
}

StepRequest ParseStep(const Napi::CallbackInfo& info) {
  const Napi::Object o = ObjectArg(info, 0);
  StepRequest r;
  const Napi::Value ids = o.Get("ids");
  if (!ids.IsTypedArray() || ids.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw Napi::TypeError::New(info.Env(), "Expected Int32Array for ids");
  }
  const auto array = ids.As<Napi::Int32Array>();
  r.ids.assign(array.Data(), array.Data() + array.ElementLength());
  r.batch = static_cast<int64_t>(NumberField(o, "batch"));
  r.seq = static_cast<int64_t>(NumberField(o, "seq"));
  if (r.batch < 1 || r.seq < 1 || static_cast<size_t>(r.batch * r.seq) != r.ids.size()) {
    throw Napi::RangeError::New(info.Env(), "ids length must equal batch * seq, both at least 1");
  }
  r.logits = static_cast<LogitsMode>(static_cast<int>(NumberField(o, "logits")));
  r.sampling.temperature = NumberField(o, "temperature");
  r.sampling.top_k = static_cast<int64_t>(NumberField(o, "topK"));
  r.sampling.top_p = NumberField(o, "topP");
  const Napi::Value uniforms = o.Get("uniforms");
  if (r.sampling.temperature > 0) {
    if (!uniforms.IsTypedArray() || uniforms.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
        uniforms.As<Napi::Float64Array>().ElementLength() != static_cast<size_t>(r.batch)) {
      throw Napi::TypeError::New(info.Env(), "Expected Float64Array of one uniform draw per row for uniforms");
    }
    const auto u = uniforms.As<Napi::Float64Array>();
    r.sampling.uniforms.assign(u.Data(), u.Data() + u.ElementLength());
  }
  return r;
}

std::string StringField(const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string("Expected string for ") + key);
  return v.As<Napi::String>().Utf8Value();
}

}  // namespace

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  const Napi::Object o = ObjectArg(info, 0);
  LoadRequest r;
  r.path = StringField(o, "path");
  r.device = StringField(o, "device");
  r.dtype = StringField(o, "dtype");
  r.compile = o.Get("compile").ToBoolean().Value();
  const Napi::Value cfg_value = o.Get("config");
  if (!cfg_value.IsObject()) throw Napi::TypeError::New(info.Env(), "Expected object for config");
  const Napi::Object cfg = cfg_value.As<Napi::Object>();
  ModelConfig& c = r.config;
  c.vocab_size = static_cast<int64_t>(NumberField(cfg, "vocab_size"));
  c.context_length = static_cast<int64_t>(NumberField(cfg, "context_length"));
  c.emb_dim = static_cast<int64_t>(NumberField(cfg, "emb_dim"));
  c.n_heads = static_cast<int64_t>(NumberField(cfg, "n_heads"));
  c.n_layers = static_cast<int64_t>(NumberField(cfg, "n_layers"));
  c.hidden_dim = static_cast<int64_t>(NumberField(cfg, "hidden_dim"));
  c.head_dim = static_cast<int64_t>(NumberField(cfg, "head_dim"));
  c.n_kv_groups = static_cast<int64_t>(NumberField(cfg, "n_kv_groups"));
  c.rope_base = NumberField(cfg, "rope_base");
  c.qk_norm = cfg.Get("qk_norm").ToBoolean().Value();
  return QueueLoad(info.Env(), std::move(r));
}

Napi::Function ModelWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {InstanceMethod<&ModelWrap::Prefill>("prefill"), InstanceMethod<&ModelWrap::Decode>("decode"),
                      InstanceMethod<&ModelWrap::Forward>("forward"), InstanceMethod<&ModelWrap::ResetCache>("resetCache"),
                      InstanceMethod<&ModelWrap::CacheLength>("cacheLength"), InstanceMethod<&ModelWrap::Info>("info"),
                      InstanceMethod<&ModelWrap::Dispose>("dispose")});
}

Napi::Object ModelWrap::NewInstance(Napi::Env env, std::shared_ptr<Qwen3Engine> engine) {
  Napi::Object obj = env.GetInstanceData<Napi::FunctionReference>()->New({});
  Unwrap(obj)->engine_ = std::move(engine);
  return obj;
}

ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {}

std::shared_ptr<Qwen3Engine> ModelWrap::engine(const Napi::Env& env) const {
  if (!engine_) throw Napi::Error::New(env, "Model is disposed");
  return engine_;
}

Napi::Value ModelWrap::Prefill(const Napi::CallbackInfo& info) {
  return QueueStep(info.Env(), engine(info.Env()), StepKind::Prefill, ParseStep(info));
}

Napi::Value ModelWrap::Decode(const Napi::CallbackInfo& info) {
  return QueueStep(info.Env(), engine(info.Env()), StepKind::Decode, ParseStep(info));
}

Napi::Value ModelWrap::Forward(const Napi::CallbackInfo& info) {
  return QueueStep(info.Env(), engine(info.Env()), StepKind::Uncached, ParseStep(info));
}

Napi::Value ModelWrap::ResetCache(const Napi::CallbackInfo& info) {
  auto e = engine(info.Env());
  // Never wait on the JS thread: the TypeScript side queues calls, so a held lock means misuse.
  std::unique_lock<std::mutex> lock(e->mutex(), std::try_to_lock);
  if (!lock.owns_lock()) throw Napi::Error::New(info.Env(), "Model is busy: cannot reset the KV cache during a step");
  e->reset_cache(info.Length() > 0 && info[0].ToBoolean().Value());
  return info.Env().Undefined();
}

Napi::Value ModelWrap::CacheLength(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(engine(info.Env())->cache_length()));
}

Napi::Value ModelWrap::Info(const Napi::CallbackInfo& info) {
  auto e = engine(info.Env());
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("device", e->device());
  out.Set("dtype", e->dtype());
  out.Set("parameterBytes", static_cast<double>(e->parameter_bytes()));
  out.Set("cacheCapacity", static_cast<double>(e->cache_capacity()));
  out.Set("compiled", e->compiled());
  out.Set("compileSeconds", e->compile_seconds());
  out.Set("graphCaptures", e->graph_captures());
  return out;
}

Napi::Value ModelWrap::Dispose(const Napi::CallbackInfo& info) {
  // A step in flight holds its own reference; the weights go when it finishes.
  engine_.reset();
  return info.Env().Undefined();
}

}  // namespace qwen3
