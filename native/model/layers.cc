#include "model/layers.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>

namespace qwen3 {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& scale) {
  const auto input_dtype = x.scalar_type();
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor variance = xf.pow(2).mean(-1, /*keepdim=*/true);
  at::Tensor normed = xf * at::rsqrt(variance + kNormEps);
  normed = normed * scale;
  return normed.to(input_dtype);
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor x1 = x.narrow(-1, 0, half);                  // (batch, heads, seq, head_dim / 2)
  const at::Tensor x2 = x.narrow(-1, half, half);               // (batch, heads, seq, head_dim / 2)
  const at::Tensor rotated = at::cat({-x2, x1}, -1);            // (batch, heads, seq, head_dim)
  // Broadcast over heads (and over the batch when every row shares its positions).
  const at::Tensor c = cos.dim() == 3 ? cos.unsqueeze(1) : cos.unsqueeze(0).unsqueeze(0);
  const at::Tensor s = sin.dim() == 3 ? sin.unsqueeze(1) : sin.unsqueeze(0).unsqueeze(0);
  const at::Tensor rotated_x = x * c + rotated * s;
  return rotated_x.to(x.scalar_type());
}

at::Tensor future_keys(int64_t rows, int64_t first, int64_t keys, c10::Device device) {
  const auto opts = at::TensorOptions().device(device).dtype(at::kLong);
  return at::arange(keys, opts).unsqueeze(0) > (at::arange(rows, opts) + first).unsqueeze(1);
}

at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& hidden) {
  at::Tensor scores = at::matmul(q, k.transpose(2, 3));  // (batch, heads, rows, keys)
  if (hidden.defined()) scores = scores.masked_fill(hidden, -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(scores / std::sqrt(static_cast<double>(q.size(3))), -1), v);  // (batch, heads, rows, hd)
}

at::Tensor causal_attention_blocks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t start) {
  const int64_t seq = q.size(2);
  // 64-query blocks for short prompts, 128 for long ones: the fastest at 512 and 2,048 tokens.
  const int64_t block = std::clamp<int64_t>(seq / 8, 64, 128);
  std::vector<at::Tensor> out;
  for (int64_t s = 0; s < seq; s += block) {
    const int64_t rows = std::min(block, seq - s), visible = start + s + rows;
    // Query s + i sits at position start + s + i and sees the keys up to it.
    out.push_back(masked_attention(q.narrow(2, s, rows), k.narrow(2, 0, visible), v.narrow(2, 0, visible),
                                   future_keys(rows, start + s, visible, q.device())));  // (batch, heads, rows, hd)
  }
  return out.size() == 1 ? out[0] : at::cat(out, 2);
}

namespace {

// ATen's float cos and sin on x86 are oneMKL's VML functions, and oneMKL 2024.2 (the one in the
// torch 2.13 wheels) settles which kernel a function runs on its first call. When that first
// call comes from several of ATen's threads at once (a table of more than 2,048 elements is
// split between them), one thread's part can run a low-accuracy kernel: a whole half of the
// cos table off by up to ~1.5e-4 for every step of that model (pytorch/pytorch#188792). One
// call on one element, on this thread alone, before any table is made, settles it.
void settle_vml_kernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    const at::Tensor one = at::zeros({1}, at::TensorOptions().dtype(at::kFloat));
    (void)one.cos();
    (void)one.sin();
  });
}

}  // namespace

RopeTable::RopeTable(int64_t head_dim, double theta, int64_t max_length, c10::Device device)
    : max_length_(max_length), device_(device) {
  const at::Tensor exponents =
      at::arange(0, head_dim, 2, at::TensorOptions().dtype(at::kFloat)).narrow(0, 0, head_dim / 2) / head_dim;
  inv_freq_ = at::pow(theta, exponents).reciprocal() * 1.0;  // (head_dim / 2,)
}

std::pair<at::Tensor, at::Tensor> RopeTable::slice(int64_t start, int64_t length) {
  const int64_t needed = start + length;
  if (!cos_.defined() || cos_.size(0) < needed) {
    const int64_t filled = cos_.defined() ? cos_.size(0) : 0;
    const int64_t rows = std::min(max_length_, (std::max(needed, 2 * filled) + 1023) / 1024 * 1024);
    const at::Tensor positions = at::arange(rows, at::TensorOptions().dtype(at::kFloat));
    at::Tensor angles = positions.unsqueeze(1) * inv_freq_.unsqueeze(0);  // (rows, head_dim / 2)
    angles = at::cat({angles, angles}, 1);                                 // (rows, head_dim)
    settle_vml_kernels();
    cos_ = angles.cos().to(device_);
    sin_ = angles.sin().to(device_);
  }
  return {cos_.narrow(0, start, length), sin_.narrow(0, start, length)};
}

Padding make_padding(const std::vector<int64_t>& pad, int64_t start, int64_t seq, RopeTable& rope, c10::Device device) {
  const auto batch = static_cast<int64_t>(pad.size());
  const int64_t total = start + seq;
  const auto opts = at::TensorOptions().dtype(at::kLong);
  std::vector<int64_t> pad_copy(pad);
  const at::Tensor pads = at::from_blob(pad_copy.data(), {batch, 1}, at::kLong).clone();  // (batch, 1)
  const at::Tensor index = at::arange(start, total, opts).unsqueeze(0);                   // (1, seq) absolute index
  // A row's first real token is its position 0; padding positions are clamped to 0 (never seen).
  const at::Tensor positions = (index - pads).clamp_min(0);  // (batch, seq)
  const auto [cos_all, sin_all] = rope.slice(0, total);      // (total, hd) on the device
  Padding p;
  const at::Tensor flat = positions.flatten().to(device);
  p.cos = cos_all.index_select(0, flat).view({batch, seq, -1});
  p.sin = sin_all.index_select(0, flat).view({batch, seq, -1});
  const at::Tensor keys = at::arange(total, opts).view({1, 1, total});  // (1, 1, total)
  const at::Tensor queries = index.view({1, seq, 1});                    // (1, seq, 1)
  // Causal and past the row's padding; a padding query sees itself, so no row of the softmax is
  // empty (an all-masked row would be NaN, and NaN spreads through later layers' values).
  const at::Tensor visible = (keys <= queries) & ((keys >= pads.view({batch, 1, 1})) | (keys == queries));
  p.visible = visible.unsqueeze(1).to(device);  // (batch, 1, seq, total)
  return p;
}

}  // namespace qwen3
