#include "binding/slot_requests.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "binding/arguments.h"

namespace qwen3 {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

// The typed array at o[key] with `length` elements (any length when negative), copied.
template <typename Element>
std::vector<Element> TypedArrayField(const Napi::Object& o, const char* key, napi_typedarray_type type, int64_t length, const std::string& expected) {
  const Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type ||
      (length >= 0 && v.As<Napi::TypedArray>().ElementLength() != static_cast<size_t>(length))) {
    Fail(o.Env(), expected, key, v);
  }
  const auto array = v.As<Napi::TypedArrayOf<Element>>();
  return std::vector<Element>(array.Data(), array.Data() + array.ElementLength());
}

std::vector<int32_t> Int32s(const Napi::Object& o, const char* key, int64_t length, const std::string& expected) {
  return TypedArrayField<int32_t>(o, key, napi_int32_array, length, expected);
}

std::vector<double> Float64s(const Napi::Object& o, const char* key, int64_t length, const std::string& expected) {
  return TypedArrayField<double>(o, key, napi_float64_array, length, expected);
}

// Element i of an array named `key`, checked as an integer in [min, max] (the message built only
// for a value out of range: ids may hold many thousands).
int64_t IntegerAt(const Napi::Env& env, const char* key, size_t i, int64_t value, int64_t min, int64_t max) {
  if (value >= min && value <= max) return value;
  return IntegerValue(env, Napi::Number::New(env, static_cast<double>(value)), std::string(key) + "[" + std::to_string(i) + "]", min, max);
}

double NumberAt(const Napi::Env& env, const char* key, size_t i, double value, double min, double max, bool above_min = false) {
  if (std::isfinite(value) && value <= max && (above_min ? value > min : value >= min)) return value;
  return NumberValue(env, Napi::Number::New(env, value), std::string(key) + "[" + std::to_string(i) + "]", min, max, above_min);
}

}  // namespace

SlotStepRequest ParseSlotStep(const Napi::CallbackInfo& info, const Qwen3Engine& engine) {
  const Napi::Object o = ObjectArg(info, 0, "slot step request");
  const Napi::Env env = o.Env();
  const ModelConfig& config = engine.config();
  SlotStepRequest r;
  r.slots = Int32s(o, "slots", -1, "Int32Array of one slot index per row");
  const auto rows = static_cast<int64_t>(r.slots.size());
  if (rows < 1 || rows > kMaxSlots) {
    Fail(env, "Int32Array of 1 to " + str(kMaxSlots) + " slot indices", "slots", o.Get("slots"));
  }
  std::vector<int64_t> row_of(static_cast<size_t>(kMaxSlots), -1);
  for (size_t i = 0; i < r.slots.size(); ++i) {
    const int64_t slot = IntegerAt(env, "slots", i, r.slots[i], 0, kMaxSlots - 1);
    int64_t& seen = row_of[static_cast<size_t>(slot)];
    if (seen >= 0) {
      throw Napi::RangeError::New(env, "Expected each slot at most once per step for slots[" + str(static_cast<int64_t>(i)) + "] but received " +
                                           str(slot) + ", already the slot of row " + str(seen));
    }
    seen = static_cast<int64_t>(i);
  }
  const std::string per_row = " per row (" + str(rows) + ")";
  r.ids = Int32s(o, "ids", -1, "Int32Array of token ids");
  const auto total = static_cast<int64_t>(r.ids.size());
  if (total < rows) {
    throw Napi::RangeError::New(env, "Expected at least one token per row (" + str(rows) + ") for ids but received " + str(total));
  }
  for (size_t i = 0; i < r.ids.size(); ++i) IntegerAt(env, "ids", i, r.ids[i], 0, config.vocab_size - 1);
  const std::vector<int32_t> offsets = Int32s(o, "offsets", rows + 1, "Int32Array of rows + 1 (" + str(rows + 1) + ") offsets into ids");
  if (offsets[0] != 0) Fail(env, "0", "offsets[0]", Napi::Number::New(env, offsets[0]));
  for (int64_t i = 1; i <= rows; ++i) {
    const auto at = static_cast<size_t>(i);
    // Every row gets at least one token; the last offset is the end of ids.
    if (i == rows && offsets[at] != total) {
      Fail(env, str(total) + " (the length of ids)", "offsets[" + str(i) + "]", Napi::Number::New(env, offsets[at]));
    }
    IntegerAt(env, "offsets", at, offsets[at], offsets[at - 1] + 1, total - (rows - i));
  }
  r.offsets.assign(offsets.begin(), offsets.end());
  r.starts = Int32s(o, "starts", rows, "Int32Array of one start" + per_row);
  for (size_t i = 0; i < r.starts.size(); ++i) {
    const int64_t start = IntegerAt(env, "starts", i, r.starts[i], 0, config.context_length - 1);
    const int64_t held = start + r.offsets[i + 1] - r.offsets[i];
    if (held > config.context_length) {
      throw Napi::RangeError::New(env, "Context length exceeded: row " + str(static_cast<int64_t>(i)) + " (slot " + str(r.slots[i]) +
                                           ") would hold " + str(held) + " tokens, past the model's context_length of " +
                                           str(config.context_length));
    }
  }
  r.temperature = Float64s(o, "temperature", rows, "Float64Array of one temperature" + per_row);
  for (size_t i = 0; i < r.temperature.size(); ++i) NumberAt(env, "temperature", i, r.temperature[i], 0, 1e6);
  const std::vector<int32_t> top_k = Int32s(o, "topK", rows, "Int32Array of one top-k" + per_row);
  for (size_t i = 0; i < top_k.size(); ++i) r.top_k.push_back(IntegerAt(env, "topK", i, top_k[i], 0, kMaxDim));
  r.top_p = Float64s(o, "topP", rows, "Float64Array of one top-p" + per_row);
  for (size_t i = 0; i < r.top_p.size(); ++i) NumberAt(env, "topP", i, r.top_p[i], 0, 1, /*above_min=*/true);
  r.uniforms = Float64s(o, "uniforms", rows, "Float64Array of one uniform draw" + per_row);
  for (size_t i = 0; i < r.uniforms.size(); ++i) NumberAt(env, "uniforms", i, r.uniforms[i], 0, 1);
  r.top_logprobs = IntegerField(o, "topLogprobs", -1, std::min<int64_t>(kMaxTopLogprobs, config.vocab_size));
  r.logits = BooleanField(o, "logits");
  return r;
}

CopySlotRequest ParseCopySlot(const Napi::CallbackInfo& info, const Qwen3Engine& engine) {
  const Napi::Env env = info.Env();
  const auto arg = [&](size_t i) { return info.Length() > i ? info[i] : env.Undefined(); };
  CopySlotRequest r;
  r.from = static_cast<int32_t>(IntegerValue(env, arg(0), "from", 0, kMaxSlots - 1));
  r.to = static_cast<int32_t>(IntegerValue(env, arg(1), "to", 0, kMaxSlots - 1));
  if (r.to == r.from) Fail(env, "a slot other than from (" + str(r.from) + ")", "to", arg(1));
  r.length = static_cast<int32_t>(IntegerValue(env, arg(2), "length", 0, engine.config().context_length));
  return r;
}

}  // namespace qwen3
