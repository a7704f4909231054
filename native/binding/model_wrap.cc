#include "binding/model_wrap.h"

#include <string>
#include <thread>

#include "binding/arguments.h"
#include "binding/model_workers.h"
#include "binding/slot_requests.h"

namespace qwen3 {
namespace {

// The same bounds as lib/config.ts: what a Qwen3 config may hold at all.
ModelConfig ParseConfig(const Napi::Object& o) {
  const Napi::Value value = o.Get("config");
  if (!value.IsObject()) Fail(o.Env(), "object", "config", value);
  const Napi::Object cfg = value.As<Napi::Object>();
  const std::string p = "config.";
  ModelConfig c;
  c.vocab_size = IntegerField(cfg, "vocab_size", 1, 1 << 24, p);
  c.context_length = IntegerField(cfg, "context_length", 1, 1 << 24, p);
  c.emb_dim = IntegerField(cfg, "emb_dim", 1, 1 << 20, p);
  c.n_heads = IntegerField(cfg, "n_heads", 1, 1024, p);
  c.n_layers = IntegerField(cfg, "n_layers", 1, 1024, p);
  c.hidden_dim = IntegerField(cfg, "hidden_dim", 1, 1 << 20, p);
  c.head_dim = IntegerField(cfg, "head_dim", 2, 4096, p);
  c.n_kv_groups = IntegerField(cfg, "n_kv_groups", 1, 1024, p);
  c.qk_norm = BooleanField(cfg, "qk_norm", p);
  c.rope_base = NumberField(cfg, "rope_base", 0, 1e12, /*above_min=*/true);
  c.tie_word_embeddings = BooleanField(cfg, "tie_word_embeddings", p);
  if (c.n_heads % c.n_kv_groups != 0) {
    Fail(o.Env(), "a divisor of n_heads (" + std::to_string(c.n_heads) + ")", "config.n_kv_groups", cfg.Get("n_kv_groups"));
  }
  if (c.head_dim % 2 != 0) Fail(o.Env(), "even integer", "config.head_dim", cfg.Get("head_dim"));
  return c;
}

// ids (an Int32Array of batch * seq token ids, each below the vocabulary size), batch and seq.
void ParseIds(const Napi::Object& o, int64_t vocab, StepRequest& r) {
  const Napi::Env env = o.Env();
  const Napi::Value ids = o.Get("ids");
  if (!ids.IsTypedArray() || ids.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) Fail(env, "Int32Array", "ids", ids);
  const auto array = ids.As<Napi::Int32Array>();
  r.ids.assign(array.Data(), array.Data() + array.ElementLength());  // copied: later JS writes cannot reach the worker
  r.batch = IntegerField(o, "batch", 1, kMaxDim);
  r.seq = IntegerField(o, "seq", 1, kMaxDim);
  if (static_cast<uint64_t>(r.batch) * static_cast<uint64_t>(r.seq) != r.ids.size()) {  // < 2^62: no overflow
    throw Napi::RangeError::New(env, "Expected ids to hold batch * seq = " + std::to_string(r.batch) + " * " +
                                         std::to_string(r.seq) + " tokens but received " + std::to_string(r.ids.size()));
  }
  for (size_t i = 0; i < r.ids.size(); ++i) {
    if (r.ids[i] < 0 || r.ids[i] >= vocab) {
      throw Napi::RangeError::New(env, "Expected integer between 0 and " + std::to_string(vocab - 1) + " for token id at index " +
                                           std::to_string(i) + " but received " + std::to_string(r.ids[i]));
    }
  }
}

// temperature, topK, topP, and with a temperature one uniform draw in [0, 1] per row and step.
void ParseSampling(const Napi::Object& o, bool many_steps, StepRequest& r) {
  const Napi::Env env = o.Env();
  r.sampling.temperature = NumberField(o, "temperature", 0, 1e6);
  r.sampling.top_k = IntegerField(o, "topK", 0, kMaxDim);
  r.sampling.top_p = NumberField(o, "topP", 0, 1, /*above_min=*/true);
  if (r.sampling.temperature <= 0) return;
  const Napi::Value uniforms = o.Get("uniforms");
  if (!uniforms.IsTypedArray() || uniforms.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      uniforms.As<Napi::Float64Array>().ElementLength() != static_cast<size_t>(r.batch * r.steps)) {
    Fail(env, many_steps ? "Float64Array of one uniform draw per row and step" : "Float64Array of one uniform draw per row", "uniforms", uniforms);
  }
  const auto u = uniforms.As<Napi::Float64Array>();
  r.sampling.uniforms.assign(u.Data(), u.Data() + u.ElementLength());
  for (const double draw : r.sampling.uniforms) {
    if (!(draw >= 0 && draw <= 1)) {  // also false for NaN
      throw Napi::RangeError::New(env, "Expected uniform draws between 0 and 1 for uniforms but received " + std::to_string(draw));
    }
  }
}

// pad: absent, or an Int32Array of one left-padding count per row, each leaving a real token.
void ParsePad(const Napi::Object& o, StepRequest& r) {
  const Napi::Value pad = o.Get("pad");
  if (pad.IsUndefined() || pad.IsNull()) return;
  if (!pad.IsTypedArray() || pad.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      pad.As<Napi::Int32Array>().ElementLength() != static_cast<size_t>(r.batch)) {
    Fail(o.Env(), "Int32Array of one padding count per row", "pad", pad);
  }
  const auto counts = pad.As<Napi::Int32Array>();
  for (size_t i = 0; i < counts.ElementLength(); ++i) {
    if (counts[i] < 0 || counts[i] >= r.seq) {
      throw Napi::RangeError::New(o.Env(), "Expected padding between 0 and " + std::to_string(r.seq - 1) + " for pad[" + std::to_string(i) +
                                               "] but received " + std::to_string(counts[i]));
    }
    r.pad.push_back(counts[i]);
  }
}

// A rank of a process group may wait at teardown for the others (parallel/process_group.cc), so
// its engine is let go off the JS thread.
bool waits_at_teardown(const std::shared_ptr<LoadedEngine>& engine) { return engine != nullptr && engine->engine->process_group().world > 1; }

// A step request, checked field by field (types and ranges; the engine checks what depends on
// its state).
StepRequest ParseStep(const Napi::CallbackInfo& info, const Qwen3Engine& engine, bool many_steps) {
  const Napi::Object o = ObjectArg(info, 0, "step request");
  StepRequest r;
  ParseIds(o, engine.config().vocab_size, r);
  r.logits = static_cast<LogitsMode>(IntegerField(o, "logits", 0, 2));
  if (many_steps) {
    r.steps = IntegerField(o, "steps", 1, engine.config().context_length);
    r.stop_id = IntegerField(o, "stopId", -1, kMaxDim);
  }
  ParseSampling(o, many_steps, r);
  ParsePad(o, r);
  return r;
}

// safetensors: absent or null (a .pth at path), or {files: [paths], tensors: [{name, file, dtype,
// shape, begin, end}]} as lib/ read the files' headers.
void ParseSafetensors(const Napi::Object& o, LoadRequest& r) {
  const Napi::Env env = o.Env();
  const Napi::Value value = o.Get("safetensors");
  if (value.IsUndefined() || value.IsNull()) return;
  if (!value.IsObject()) Fail(env, "object", "safetensors", value);
  const Napi::Object st = value.As<Napi::Object>();
  const Napi::Value files = st.Get("files"), tensors = st.Get("tensors");
  if (!files.IsArray() || files.As<Napi::Array>().Length() == 0) Fail(env, "non-empty array of file paths", "safetensors.files", files);
  if (!tensors.IsArray()) Fail(env, "array", "safetensors.tensors", tensors);
  const Napi::Array file_list = files.As<Napi::Array>(), tensor_list = tensors.As<Napi::Array>();
  for (uint32_t i = 0; i < file_list.Length(); ++i) {
    const Napi::Object holder = Napi::Object::New(env);
    holder.Set("path", file_list.Get(i));
    r.files.push_back(StringField(holder, "path"));
  }
  constexpr int64_t kMaxByte = int64_t(1) << 52;  // exact in a double
  for (uint32_t i = 0; i < tensor_list.Length(); ++i) {
    const std::string at = "safetensors.tensors[" + std::to_string(i) + "].";
    const Napi::Value item = tensor_list.Get(i);
    if (!item.IsObject()) Fail(env, "object", "safetensors.tensors[" + std::to_string(i) + "]", item);
    const Napi::Object t = item.As<Napi::Object>();
    StoredTensor s;
    s.name = StringField(t, "name");
    s.file = IntegerField(t, "file", 0, static_cast<int64_t>(r.files.size()) - 1, at);
    s.dtype = StringField(t, "dtype");
    const Napi::Value shape = t.Get("shape");
    if (!shape.IsArray() || shape.As<Napi::Array>().Length() > 8) Fail(env, "array of at most 8 dimensions", at + "shape", shape);
    const Napi::Array dims = shape.As<Napi::Array>();
    for (uint32_t d = 0; d < dims.Length(); ++d) {
      const Napi::Object holder = Napi::Object::New(env);
      holder.Set("dim", dims.Get(d));
      s.shape.push_back(IntegerField(holder, "dim", 0, kMaxDim, at + "shape."));
    }
    s.begin = static_cast<uint64_t>(IntegerField(t, "begin", 0, kMaxByte, at));
    s.end = static_cast<uint64_t>(IntegerField(t, "end", 0, kMaxByte, at));
    r.tensors.push_back(std::move(s));
  }
}

// randomWeights: absent or null (weights from files), or {seed} for weights drawn on the device.
void ParseRandomWeights(const Napi::Object& o, LoadRequest& r) {
  const Napi::Value value = o.Get("randomWeights");
  if (value.IsUndefined() || value.IsNull()) return;
  if (!value.IsObject()) Fail(o.Env(), "object", "randomWeights", value);
  if (!r.files.empty()) throw Napi::TypeError::New(o.Env(), "Expected either safetensors or randomWeights in a load request, not both");
  r.random_weights = true;
  r.seed = static_cast<uint64_t>(IntegerField(value.As<Napi::Object>(), "seed", 0, (int64_t(1) << 53) - 1, "randomWeights."));
}

// devices: absent or null (one device), or the tensor-parallel ranks' devices, at least two.
void ParseDevices(const Napi::Object& o, LoadRequest& r) {
  const Napi::Value value = o.Get("devices");
  if (value.IsUndefined() || value.IsNull()) return;
  if (!value.IsArray() || value.As<Napi::Array>().Length() < 2 || value.As<Napi::Array>().Length() > 64) {
    Fail(o.Env(), "array of 2 to 64 device names", "devices", value);
  }
  const Napi::Array list = value.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); ++i) {
    const Napi::Value d = list.Get(i);
    if (!d.IsString()) Fail(o.Env(), "string", "devices[" + std::to_string(i) + "]", d);
    r.devices.push_back(d.As<Napi::String>().Utf8Value());
  }
  r.device = r.devices.front();
}

// processGroup: absent or null, or {rank, worldSize, masterAddr, masterPort}: this process's
// rank of a model split over processes (parallel/process_group.h).
void ParseProcessGroup(const Napi::Object& o, LoadRequest& r) {
  const Napi::Value value = o.Get("processGroup");
  if (value.IsUndefined() || value.IsNull()) return;
  if (!value.IsObject()) Fail(o.Env(), "object", "processGroup", value);
  if (!r.devices.empty()) throw Napi::TypeError::New(o.Env(), "Expected either devices or processGroup in a load request, not both");
  const Napi::Object g = value.As<Napi::Object>();
  ProcessGroupSpec& s = r.process_group;
  s.world = static_cast<int>(IntegerField(g, "worldSize", 2, 64, "processGroup."));
  s.rank = static_cast<int>(IntegerField(g, "rank", 0, s.world - 1, "processGroup."));
  s.master_addr = StringField(g, "masterAddr");
  s.master_port = static_cast<int>(IntegerField(g, "masterPort", 1, 65535, "processGroup."));
}

}  // namespace

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  const Napi::Object o = ObjectArg(info, 0, "load request");
  LoadRequest r;
  r.path = StringField(o, "path");
  r.device = StringField(o, "device");
  r.dtype = StringField(o, "dtype");
  if (r.dtype != "float32" && r.dtype != "bfloat16" && r.dtype != "float16") {
    Fail(info.Env(), "one of \"float32\", \"bfloat16\", \"float16\"", "dtype", o.Get("dtype"));
  }
  r.compile = BooleanField(o, "compile");
  const Napi::Value quantize = o.Get("quantize");
  if (!quantize.IsUndefined() && !quantize.IsNull()) {
    const std::string kind = quantize.IsString() ? quantize.As<Napi::String>().Utf8Value() : "";
    if (kind != "int8" && kind != "fp8") Fail(info.Env(), "\"int8\", \"fp8\" or null", "quantize", quantize);
    r.quantize = kind;
  }
  r.config = ParseConfig(o);
  ParseSafetensors(o, r);
  ParseRandomWeights(o, r);
  ParseDevices(o, r);
  ParseProcessGroup(o, r);
  const Napi::Value timeout = o.Get("collectiveTimeoutMs");
  if (!timeout.IsUndefined()) r.collective_timeout_ms = IntegerField(o, "collectiveTimeoutMs", 1, int64_t(1) << 31);
  return QueueLoad(info.Env(), std::move(r));
}

Napi::Function ModelWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeModel",
                     {InstanceMethod<&ModelWrap::Prefill>("prefill"), InstanceMethod<&ModelWrap::Decode>("decode"),
                      InstanceMethod<&ModelWrap::Forward>("forward"), InstanceMethod<&ModelWrap::DecodeSteps>("decodeSteps"),
                      InstanceMethod<&ModelWrap::SlotStep>("slotStep"), InstanceMethod<&ModelWrap::CopySlot>("copySlot"),
                      InstanceMethod<&ModelWrap::ResetCache>("resetCache"),
                      InstanceMethod<&ModelWrap::CacheLength>("cacheLength"), InstanceMethod<&ModelWrap::Info>("info"),
                      InstanceMethod<&ModelWrap::Dispose>("dispose")});
}

Napi::Object ModelWrap::NewInstance(Napi::Env env, std::shared_ptr<LoadedEngine> engine) {
  Napi::Object obj = env.GetInstanceData<Napi::FunctionReference>()->New({});
  ModelWrap* wrap = Unwrap(obj);
  wrap->status_ = std::make_shared<EngineStatus>();
  wrap->status_->Refresh(*engine->engine);  // no step can run yet: the engine is not shared
  wrap->engine_ = std::move(engine);
  return obj;
}

ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {}

std::shared_ptr<LoadedEngine> ModelWrap::engine(const Napi::Env& env) const {
  if (!engine_) throw Napi::Error::New(env, "Model is disposed");
  return engine_;
}

Napi::Value ModelWrap::Step(const Napi::CallbackInfo& info, StepKind kind) {
  auto e = engine(info.Env());
  StepRequest request = ParseStep(info, *e->engine, kind == StepKind::DecodeSteps);
  return QueueStep(info.Env(), std::move(e), status_, kind, std::move(request));
}

Napi::Value ModelWrap::Prefill(const Napi::CallbackInfo& info) { return Step(info, StepKind::Prefill); }
Napi::Value ModelWrap::Decode(const Napi::CallbackInfo& info) { return Step(info, StepKind::Decode); }
Napi::Value ModelWrap::Forward(const Napi::CallbackInfo& info) { return Step(info, StepKind::Uncached); }
Napi::Value ModelWrap::DecodeSteps(const Napi::CallbackInfo& info) { return Step(info, StepKind::DecodeSteps); }

Napi::Value ModelWrap::SlotStep(const Napi::CallbackInfo& info) {
  auto e = engine(info.Env());
  SlotStepRequest request = ParseSlotStep(info, *e->engine);
  return QueueSlotStep(info.Env(), std::move(e), status_, std::move(request));
}

Napi::Value ModelWrap::CopySlot(const Napi::CallbackInfo& info) {
  auto e = engine(info.Env());
  const CopySlotRequest request = ParseCopySlot(info, *e->engine);
  return QueueCopySlot(info.Env(), std::move(e), status_, request);
}

Napi::Value ModelWrap::ResetCache(const Napi::CallbackInfo& info) {
  auto e = engine(info.Env());
  const Napi::Value release = info.Length() > 0 ? info[0] : info.Env().Undefined();
  if (!release.IsUndefined() && !release.IsBoolean()) Fail(info.Env(), "boolean", "release", release);
  // Busy from a step's call until its Promise settles (EngineStatus::Busy). Once none is in
  // flight no worker holds the engine's lock, so taking it here never waits.
  if (status_->Busy()) throw Napi::Error::New(info.Env(), "Model is busy: cannot reset the KV cache during a step");
  std::unique_lock<std::mutex> lock(e->mutex, std::try_to_lock);
  if (!lock.owns_lock()) throw Napi::Error::New(info.Env(), "Model is busy: cannot reset the KV cache during a step");
  // On the engine thread, after what is queued there: a speculated slot step runs there between
  // calls, outside the lock, on the slots that a reset frees. So this waits for at most that one
  // step, which has already begun.
  const bool free_memory = release.IsBoolean() && release.As<Napi::Boolean>().Value();
  e->thread.run([&] {
    e->engine->reset_cache(free_memory);
    status_->Refresh(*e->engine);
  });
  return info.Env().Undefined();
}

Napi::Value ModelWrap::CacheLength(const Napi::CallbackInfo& info) {
  engine(info.Env());
  return Napi::Number::New(info.Env(), static_cast<double>(status_->Get().cache_length));
}

Napi::Value ModelWrap::Info(const Napi::CallbackInfo& info) {
  auto e = engine(info.Env());
  const EngineStatus::Values s = status_->Get();
  Napi::Object out = Napi::Object::New(info.Env());
  // Fixed at load: safe to read while a step runs.
  out.Set("device", e->engine->device());
  Napi::Array devices = Napi::Array::New(info.Env());
  for (const std::string& d : e->engine->devices()) devices.Set(devices.Length(), d);
  out.Set("devices", devices);
  out.Set("transport", e->engine->transport());
  const ProcessGroupSpec group = e->engine->process_group();
  if (group.world > 0) {
    Napi::Object g = Napi::Object::New(info.Env());
    g.Set("rank", group.rank);
    g.Set("worldSize", group.world);
    out.Set("processGroup", g);
  } else {
    out.Set("processGroup", info.Env().Null());
  }
  out.Set("dtype", e->engine->dtype());
  out.Set("parameterBytes", static_cast<double>(e->engine->parameter_bytes()));
  out.Set("compiled", e->engine->compiled());
  // Changed by steps: the copy made after the last one.
  out.Set("cacheCapacity", static_cast<double>(s.cache_capacity));
  out.Set("slotCacheBytes", static_cast<double>(s.slot_cache_bytes));
  out.Set("compileSeconds", s.compile_seconds);
  out.Set("graphCaptures", s.graph_captures);
  Napi::Object speculation = Napi::Object::New(info.Env());
  speculation.Set("run", static_cast<double>(s.speculated_slot_steps));
  speculation.Set("used", static_cast<double>(s.used_speculated_slot_steps));
  out.Set("slotSpeculation", speculation);
  out.Set("slotPromptRows", static_cast<double>(s.prompt_chunks_as_rows));
  return out;
}

ModelWrap::~ModelWrap() {
  // Collected without dispose(): let go on a thread of its own (a finalizer may not start async work).
  if (waits_at_teardown(engine_)) {
    std::thread([engine = std::move(engine_)]() mutable { engine.reset(); }).detach();
  }
}

Napi::Value ModelWrap::Dispose(const Napi::CallbackInfo& info) {
  // A step in flight holds its own reference; the weights go when it finishes.
  if (waits_at_teardown(engine_)) QueueRelease(info.Env(), std::move(engine_));
  engine_.reset();
  return info.Env().Undefined();
}

}  // namespace qwen3
