// Fused CUDA kernels for decode steps and prompts (norm_kernels.cu, attention_kernel.cu,
// gemv_kernels.cu, fp8_gemv.cu, head_kernel.cu, batch_product.cu): each replaces 6-20 small ATen kernels, whose
// launches and drains, not the weight reads, bound a batch-1 decode once the step is a CUDA graph. Arithmetic is float32
// throughout and rounds to the model dtype where the reference rounds; measurements behind the
// choices: docs/performance.md. Plain pointers and sizes only, so this header needs neither
// torch nor the CUDA headers. `dtype` is 0 float32, 1 bfloat16, 2 float16 (common/element_type.h);
// `stream` is a cudaStream_t. Norm scales and cos/sin are float32.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qwen3::cuda {

// out[r, :] = cast(x * rsqrt(mean(x^2) + eps) * w), statistics in float32. x, out: (rows, dim)
void rms_norm(int dtype, const void* x, const float* w, void* out, int rows, int dim, float eps, void* stream);

// `seq` tokens per row: from qkv (rows, seq, (heads + 2 groups) * hd), per-head RMSNorm and RoPE
// on queries and keys, token t at position *position + t (its row of cos/sin (positions, hd) and
// its slot in the key/value buffers); queries go to q_out (rows, seq, heads, hd), keys and values
// into k_cache/v_cache (rows, groups, capacity, hd). Heads of 128 in 2-byte elements are
// finished with the streaming decode attention's arithmetic (cuda/head_lanes.cuh);
// QWEN3_NO_PROMPT_HEAD_LANES=1 sends them to the general kernel, to compare.
void qk_norm_rope_cache(int dtype, const void* qkv, const float* q_norm, const float* k_norm, bool qk_norm,
                        const float* cos, const float* sin, const int64_t* position, int seq, void* q_out, void* k_cache,
                        void* v_cache, int rows, int heads, int groups, int hd, int capacity, float eps, void* stream);

// The decode step's attention in one kernel: per-head RMSNorm and RoPE of this step's queries and
// keys (as qk_norm_rope_cache, from qkv (rows, (heads + 2 groups) * hd)), the key and value
// written into the caches at the row's position, and each query head's attention over positions
// 0..position; out: (rows, heads * hd). Row r's position is position[r * position_stride] (stride
// 0: every row at *position, as in a batch step) and its keys and values are row row_slots[r] of
// the caches (null: row r; the caches are (slots, groups, capacity, hd)). A row with a negative
// position is padding: it reads and writes no cache and gets a zero context. The positions are
// split up to attention_splits(rows, capacity) ways, each row by its own length; `partials` holds
// attention_partials_floats(...) floats and `done` rows * groups ints, zero before the first
// call and left zero by each. `phase` kAttendFused does all of it; where several rows are tokens
// of one slot (a prompt run as rows), each row reads keys that other rows write, so the step
// runs kAttendStoreOnly (every row's key and value into the cache) and then kAttendReadOnly (the
// attention, writing nothing), with the same arithmetic as the fused kernel.
// kAttendFusedEarly is kAttendFused with each block's first cached keys and values (and the
// row's position) loaded before the wait for the kernel before, so that they are in flight while
// that kernel finishes. Only for a caller whose kernel before this one lets its own dependents
// start after its wait (the one-row products do; cuda::launch's programmatic dependent launch):
// then, when any block of this kernel starts, every kernel before that one has finished, and
// with them every earlier step that wrote the cache, and whatever set the position.
// QWEN3_NO_EARLY_ATTENTION=1 makes it kAttendFused, to compare.
constexpr int kAttendFused = 0, kAttendStoreOnly = 1, kAttendReadOnly = 2, kAttendFusedEarly = 3;
int attention_splits(int rows, int capacity);
size_t attention_partials_floats(int rows, int heads, int hd, int capacity);
bool group_attention_supported(int dtype, int heads, int groups, int hd);
void group_attention(int dtype, const void* qkv, const float* q_norm, const float* k_norm, bool qk_norm, const float* cos, const float* sin,
                     const int64_t* position, int position_stride, const int64_t* row_slots, void* k_cache, void* v_cache, void* out,
                     float* partials, int* done, int rows, int heads, int groups, int hd, int capacity, float scale, float eps, int phase,
                     void* stream);

// out = cast(silu(g) * u) where gate_up is (rows, 2 * hidden) = [g | u]; out: (rows, hidden)
void silu_mul(int dtype, const void* gate_up, void* out, int rows, int hidden, void* stream);

// What a GEMV multiplies: x itself, RMSNorm(x) * norm rounded to the dtype, or the latter into a
// [gate | up] matrix with the SwiGLU applied to the two products.
enum GemvInput : int { kGemvPlain = 0, kGemvRmsNorm = 1, kGemvRmsNormSwiGLU = 2 };

// y (n_out,) = x' (k,) W^T (+ residual) for one row; W: (n_out, k) contiguous, x' as `input`
// says. With a residual: the rounded product plus the residual; y may be the residual (updated
// in place). kGemvRmsNormSwiGLU takes W (2 n_out, k) = [gate | up] and writes
// y[j] = silu(g_j) * u_j from the rounded products g_j (row j) and u_j (row n_out + j), rounded once.
// Inputs up to kGemvMaxInputBytes, or up to kStreamMaxInputBytes where a warp's 32 lanes take
// whole 16-byte loads of k (the streaming kernel, stream_gemv.cuh).
constexpr int kGemvMaxInputBytes = 40960;
constexpr int kStreamMaxInputBytes = 65536;
bool gemv_supported(int dtype, int k);
void gemv(int dtype, GemvInput input, const void* w, const void* x, const float* norm, const void* residual, void* y, int n_out, int k,
          float eps, void* stream);

// The same over FP8 weight rows (model/fp8_weights.h: (n, k + 16) bytes, each row's k E4M3
// values then its float32 scale): y[n] = s_n * (x' . q_n), summed in float32 and rounded once;
// wide products of many rows on the tensor cores (fp8_mma_gemv.cuh; QWEN3_NO_FP8_MMA=1 turns
// that off, to compare).
bool gemv_fp8_supported(int dtype, int k);
void gemv_fp8(int dtype, GemvInput input, const void* w, const void* x, const float* norm, const void* residual, void* y, int n_out, int k,
              float eps, void* stream);

// y (rows, n_out) = x (rows, k) W^T for 1 to kBatchProductMaxRows rows on the tensor cores, the
// weights read once for all rows (batch_product.cu): the product rounded; with a residual, plus
// the residual and rounded again (y may be the residual); with swiglu, W (2 n_out, k) = [gate |
// up] and y = silu(g) * u as gemv computes them. fp8_rows: W is FP8 rows (as gemv_fp8 takes),
// each row's sum times its scale. bfloat16 and float16, n_out a multiple of 16, k of 32, 16-byte
// aligned buffers; x must not overlap y (a normed input comes from rms_norm first).
// QWEN3_NO_BATCH_PRODUCT=1 turns it off (batch_product_supported answers false), to compare with
// cuBLAS. The decode step takes it up to kBatchProductFasterRows rows of weights in the compute
// dtype, where it beat cuBLAS end to end (past that, cuBLAS was faster: docs/performance.md), and
// for every batch it takes of FP8 rows, which cuBLAS multiplies only after widening them in memory.
constexpr int kBatchProductMaxRows = 64;
constexpr int kBatchProductFasterRows = 8;
bool batch_product_supported(int dtype, int rows, int n_out, int k);
void batch_product(int dtype, bool swiglu, bool fp8_rows, const void* w, const void* x, const void* residual, void* y, int rows, int n_out, int k,
                   void* stream);

// The end of a batch-1 decode step in one kernel: logits (n_out,) = RMSNorm(x) * norm W^T (as
// gemv with input 1) and their argmax into *next (the first of equal maxima, NaN above all, as
// at::argmax). `scratch` holds head_scratch_floats(n_out) floats and `done` one int, zero before
// the first call and left zero by each. With `chain`, the block that finishes last also does
// chain_step's work for the one row and writes the next token's row of the embedding table into
// chain->x_next (the next step's input). fp8_rows: W is FP8 rows, as gemv_fp8 takes.
struct StepChain {
  int64_t* ids;
  int64_t* position;
  int64_t* history;
  int64_t* counter;
  int max_steps;
  const void* table;  // (vocab, k) token embeddings
  void* x_next;       // (k,)
};
size_t head_scratch_floats(int n_out);
void gemv_argmax(int dtype, bool fp8_rows, const void* w, const void* x, const float* norm, void* logits, int n_out, int k, float eps,
                 float* scratch, int* done, int64_t* next, const StepChain* chain, void* stream);

// Ends a decode step that the next one follows on the device: ids (rows,) = next (rows,),
// history[r, *counter] = next[r] (history: (rows, max_steps); columns past max_steps are not
// written), then *position += 1 and *counter += 1.
void chain_step(const int64_t* next, int64_t* ids, int64_t* position, int64_t* history, int64_t* counter, int rows, int max_steps,
                void* stream);

// The current GPU's multiprocessor count (grids sized to fit on it at once).
int sm_count();

// cudaProfilerStart / cudaProfilerStop, for runs under `ncu --profile-from-start off`.
void profiler(bool start);

}  // namespace qwen3::cuda
