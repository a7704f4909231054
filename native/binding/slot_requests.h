// The arguments of slotStep and copySlot, checked on the JS thread into plain requests: types,
// ranges and everything that needs no slot's state (the engine checks each start against its
// slot's length).
#pragma once

#include <napi.h>

#include "model/engine.h"
#include "model/step.h"

namespace qwen3 {

// slotStep({slots, starts, offsets, ids, temperature, topK, topP, uniforms, topLogprobs, logits})
SlotStepRequest ParseSlotStep(const Napi::CallbackInfo& info, const Qwen3Engine& engine);
// copySlot(from, to, length)
CopySlotRequest ParseCopySlot(const Napi::CallbackInfo& info, const Qwen3Engine& engine);

}  // namespace qwen3
