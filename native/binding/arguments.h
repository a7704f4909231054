// Checking the arguments of JS calls into the addon. The rule: lib/ validates every option first,
// with messages that name the option. The binding is still reachable by anyone who requires the
// .node file, so it checks every argument's type and range again: casting NaN or 1e300 to an
// integer type is undefined behaviour, batch * seq can overflow, a zero n_kv_groups divides by
// zero in attention, and an unknown logits mode or a NaN probability would flow straight into
// tensor code. The engine checks only what depends on its state (the context left, the cache's
// batch, padding, a slot's length).
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace qwen3 {

// Dimensions and counts the binding accepts (they must fit an int32 and multiply without overflow).
constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;

// How a value is named in a message: JS spelling for numbers, quoted strings, kinds of objects.
std::string Received(const Napi::Value& v);

// Throws "Expected <expected> for <name> but received <v>": a RangeError for a number, else a TypeError.
[[noreturn]] void Fail(const Napi::Env& env, const std::string& expected, const std::string& name, const Napi::Value& v);

// Argument i, which must be an object.
Napi::Object ObjectArg(const Napi::CallbackInfo& info, size_t i, const char* name);

// An integer in [min, max], checked as a double before any cast.
int64_t IntegerValue(const Napi::Env& env, const Napi::Value& v, const std::string& name, int64_t min, int64_t max);
int64_t IntegerField(const Napi::Object& o, const char* key, int64_t min, int64_t max, const std::string& prefix = "");

// A finite number in [min, max] (or (min, max] with `above_min`).
double NumberValue(const Napi::Env& env, const Napi::Value& v, const std::string& name, double min, double max, bool above_min = false);
double NumberField(const Napi::Object& o, const char* key, double min, double max, bool above_min = false);

// A non-empty string without NUL characters.
std::string StringField(const Napi::Object& o, const char* key);

// A boolean; absent is false.
bool BooleanField(const Napi::Object& o, const char* key, const std::string& prefix = "");

}  // namespace qwen3
