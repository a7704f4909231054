#include "binding/arguments.h"

#include <cmath>
#include <cstdio>

namespace qwen3 {
namespace {

// A string as it was given, quoted, with control characters escaped and long ones cut.
std::string Quoted(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 60; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + (s.size() > 60 ? "...\"" : "\"");
}

}  // namespace

std::string Received(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_number: return v.ToString().Utf8Value();  // JS spelling: NaN, Infinity, 1.5, 1e+300
    case napi_boolean: return v.As<Napi::Boolean>().Value() ? "true" : "false";
    case napi_string: return Quoted(v.As<Napi::String>().Utf8Value());
    case napi_object: return v.IsTypedArray() ? "a typed array" : v.IsArray() ? "an array" : "an object";
    case napi_function: return "a function";
    case napi_bigint: return "a bigint";
    default: return "a value of another type";
  }
}

void Fail(const Napi::Env& env, const std::string& expected, const std::string& name, const Napi::Value& v) {
  const std::string message = "Expected " + expected + " for " + name + " but received " + Received(v);
  if (v.IsNumber()) throw Napi::RangeError::New(env, message);
  throw Napi::TypeError::New(env, message);
}

Napi::Object ObjectArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsObject()) {
    Fail(info.Env(), "object", name, info.Length() > i ? info[i] : info.Env().Undefined());
  }
  return info[i].As<Napi::Object>();
}

int64_t IntegerValue(const Napi::Env& env, const Napi::Value& v, const std::string& name, int64_t min, int64_t max) {
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(d) || std::trunc(d) != d || d < static_cast<double>(min) || d > static_cast<double>(max)) {
    Fail(env, "integer between " + std::to_string(min) + " and " + std::to_string(max), name, v);
  }
  return static_cast<int64_t>(d);
}

int64_t IntegerField(const Napi::Object& o, const char* key, int64_t min, int64_t max, const std::string& prefix) {
  return IntegerValue(o.Env(), o.Get(key), prefix + key, min, max);
}

double NumberValue(const Napi::Env& env, const Napi::Value& v, const std::string& name, double min, double max, bool above_min) {
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(d) || d > max || (above_min ? d <= min : d < min)) {
    char range[96];
    std::snprintf(range, sizeof range, "finite number %s %g and at most %g", above_min ? "above" : "of at least", min, max);
    Fail(env, range, name, v);
  }
  return d;
}

double NumberField(const Napi::Object& o, const char* key, double min, double max, bool above_min) {
  return NumberValue(o.Env(), o.Get(key), key, min, max, above_min);
}

std::string StringField(const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsString()) Fail(o.Env(), "non-empty string", key, v);
  std::string s = v.As<Napi::String>().Utf8Value();
  // A NUL would silently cut a path short when it reaches open().
  if (s.empty() || s.find('\0') != std::string::npos) Fail(o.Env(), "non-empty string without NUL characters", key, v);
  return s;
}

bool BooleanField(const Napi::Object& o, const char* key, const std::string& prefix) {
  const Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return false;
  if (!v.IsBoolean()) Fail(o.Env(), "boolean", prefix + key, v);
  return v.As<Napi::Boolean>().Value();
}

}  // namespace qwen3
