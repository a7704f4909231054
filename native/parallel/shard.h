// Megatron-style tensor parallelism for Qwen3: how `world` ranks split the model. Each rank
// holds whole key/value heads (and their query heads), a slice of the feed-forward's hidden
// units and a slice of the vocabulary head's rows; the embedding table and the norms are whole
// on every rank. Q/K/V and gate/up are split by output rows (column-parallel), the attention
// output and down projections by input columns (row-parallel, summed across ranks after each),
// and the logits gathered from the head's slices (model/block.h).
#pragma once

#include "model/config.h"
#include "model/weights.h"

namespace qwen3 {

// Throws, naming the number that does not divide, unless `world` ranks can split the model.
void check_shardable(const ModelConfig& config, int world);

// The architecture one rank runs: its heads, groups and hidden units (the vocabulary stays whole:
// the logits are gathered).
ModelConfig shard_config(const ModelConfig& config, int world);

// Rank `rank`'s share of the whole model's weights (the rest is freed as it goes).
Weights shard_weights(Weights&& whole, const ModelConfig& config, int rank, int world);

}  // namespace qwen3
