// Off-thread work for the model: each worker owns a plain C++ request, runs it in Execute()
// without touching N-API, and settles a Promise. Every exception becomes a rejection.
#pragma once

#include <napi.h>

#include <memory>

#include "qwen3_model.h"

namespace qwen3 {

// Starts loading; the Promise resolves to a ModelWrap object.
Napi::Promise QueueLoad(Napi::Env env, LoadRequest request);

enum class StepKind { Prefill, Decode, Uncached };

// Starts one forward step; the Promise resolves to {next, logits, logitsShape, cacheLength}.
Napi::Promise QueueStep(Napi::Env env, std::shared_ptr<Qwen3Engine> engine, StepKind kind, StepRequest request);

}  // namespace qwen3
