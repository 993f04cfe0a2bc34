// Fused CPU kernels for the sequential core of the Elman, LSTM and GRU layers,
// called from JAX through the XLA FFI (jaxseq/native/__init__.py builds and
// registers them).
//
// What one call does, for a whole sequence (reading order t = 0..T-1, or
// T-1..0 with `reverse`):
//   forward:  z_t = x_t W + h_{t-1} U (+ biases); the cell's gates, state and
//             output from z_t, all in one pass over a tile that stays in cache;
//   backward: the gates' pre-activation gradients dz_t from the saved
//             activations, then dh_{t-1} = dz_t U^T, and the step's share of the
//             weight and bias gradients (x_t^T dz_t, h_{t-1}^T dz_t, dz_t) while
//             dz_t is in cache; the input gradient dz W^T is left to XLA.
// Work is split over threads by batch row where each thread gets 4 rows or more
// (the threads then never meet), else by hidden unit: thread k owns units
// [j0_k, j1_k) of every gate, so a step's nonlinearities need no exchange, and
// the threads meet at one barrier per step (after which h_t, or dz_t, is
// complete for everyone's next product). The helper threads persist between calls
// (`Pool`).
//
// The matrix products use a register-blocked micro-kernel, 12x32 AVX-512 where the
// CPU has it (and the caller asks: `wide`), else 6x16 AVX2/FMA, over weights
// packed once per call into column panels (the BLIS layout). The gates' arithmetic
// runs 16 lanes wide with the AVX-512 kernel, else 8 (AVX2): the same operations.
// Steps past a sequence's length (valid[t, b] false) keep the carry and emit
// zeros, as jaxseq.unroll does.

#include <immintrin.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kElman = 0;
constexpr int kLstm = 1;
constexpr int kGru = 2;

// ----------------------------------------------------------------------- math

#define JAXSEQ_AVX512 __attribute__((target("avx512f")))
#define JAXSEQ_INLINE __attribute__((always_inline)) inline

// The gates' arithmetic is written once over a vector type: V8 (AVX2, 8 lanes) and,
// in calls that use the AVX-512 micro-kernel, V16 (16 lanes: half the instructions
// per unit; the LSTM forward pass at (T, B, D, H) = (100, 32, 32, 128) spent ~14%
// of its time in its gates' exp and tanh with V8 alone). A loop over units runs V16
// over the multiples of 16 and V8 over the rest (n is a multiple of 8), inside a
// function with the AVX-512 target and `flatten`, which inlines V16's members
// (GCC will not inline an AVX-512 function into a template compiled for AVX2).
struct V8 {
  using T = __m256;
  static constexpr int kLanes = 8;
  static JAXSEQ_INLINE T load(const float* p) { return _mm256_loadu_ps(p); }
  static JAXSEQ_INLINE void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static JAXSEQ_INLINE T set1(float x) { return _mm256_set1_ps(x); }
  static JAXSEQ_INLINE T add(T a, T b) { return _mm256_add_ps(a, b); }
  static JAXSEQ_INLINE T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static JAXSEQ_INLINE T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static JAXSEQ_INLINE T div(T a, T b) { return _mm256_div_ps(a, b); }
  static JAXSEQ_INLINE T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }    // a b + c
  static JAXSEQ_INLINE T fnmadd(T a, T b, T c) { return _mm256_fnmadd_ps(a, b, c); }  // c - a b
  static JAXSEQ_INLINE T min(T a, T b) { return _mm256_min_ps(a, b); }
  static JAXSEQ_INLINE T max(T a, T b) { return _mm256_max_ps(a, b); }
  static JAXSEQ_INLINE T floor(T a) { return _mm256_floor_ps(a); }
  static JAXSEQ_INLINE T ldexp(T y, T n) {  // y 2^n, n integral and in range
    const __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    const __m256i e = _mm256_slli_epi32(biased, 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  }
};

struct V16 {
  using T = __m512;
  static constexpr int kLanes = 16;
  JAXSEQ_AVX512 static T load(const float* p) { return _mm512_loadu_ps(p); }
  JAXSEQ_AVX512 static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  JAXSEQ_AVX512 static T set1(float x) { return _mm512_set1_ps(x); }
  JAXSEQ_AVX512 static T add(T a, T b) { return _mm512_add_ps(a, b); }
  JAXSEQ_AVX512 static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  JAXSEQ_AVX512 static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  // (a reciprocal estimate and a Newton step instead ran no faster on Zen 5)
  JAXSEQ_AVX512 static T div(T a, T b) { return _mm512_div_ps(a, b); }
  JAXSEQ_AVX512 static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  JAXSEQ_AVX512 static T fnmadd(T a, T b, T c) { return _mm512_fnmadd_ps(a, b, c); }
  JAXSEQ_AVX512 static T min(T a, T b) { return _mm512_min_ps(a, b); }
  JAXSEQ_AVX512 static T max(T a, T b) { return _mm512_max_ps(a, b); }
  JAXSEQ_AVX512 static T floor(T a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  }
  JAXSEQ_AVX512 static T ldexp(T y, T n) { return _mm512_scalef_ps(y, n); }
};

template <class V>
JAXSEQ_INLINE typename V::T v_exp(typename V::T x) {  // Cephes expf, ~1 ulp on [-88, 88]
  x = V::min(x, V::set1(88.3762626647949f));
  x = V::max(x, V::set1(-88.3762626647949f));
  const typename V::T fx = V::floor(V::fmadd(x, V::set1(1.44269504088896341f), V::set1(0.5f)));
  x = V::fnmadd(fx, V::set1(0.693359375f), x);
  x = V::fnmadd(fx, V::set1(-2.12194440e-4f), x);
  typename V::T y = V::set1(1.9875691500E-4f);
  y = V::fmadd(y, x, V::set1(1.3981999507E-3f));
  y = V::fmadd(y, x, V::set1(8.3334519073E-3f));
  y = V::fmadd(y, x, V::set1(4.1665795894E-2f));
  y = V::fmadd(y, x, V::set1(1.6666665459E-1f));
  y = V::fmadd(y, x, V::set1(5.0000001201E-1f));
  y = V::fmadd(y, V::mul(x, x), V::add(x, V::set1(1.0f)));
  return V::ldexp(y, fx);
}

template <class V>
JAXSEQ_INLINE typename V::T v_sigmoid(typename V::T x) {
  const typename V::T one = V::set1(1.0f);
  return V::div(one, V::add(one, v_exp<V>(V::sub(V::set1(0.0f), x))));
}

template <class V>  // Eigen's rational 13/6 approximation (as XLA's CPU tanh)
JAXSEQ_INLINE typename V::T v_tanh(typename V::T x) {
  const typename V::T bound = V::set1(7.90531110763549805f);
  x = V::min(V::max(x, V::sub(V::set1(0.0f), bound)), bound);
  const typename V::T x2 = V::mul(x, x);
  typename V::T p = V::set1(-2.76076847742355e-16f);
  p = V::fmadd(p, x2, V::set1(2.00018790482477e-13f));
  p = V::fmadd(p, x2, V::set1(-8.60467152213735e-11f));
  p = V::fmadd(p, x2, V::set1(5.12229709037114e-08f));
  p = V::fmadd(p, x2, V::set1(1.48572235717979e-05f));
  p = V::fmadd(p, x2, V::set1(6.37261928875436e-04f));
  p = V::fmadd(p, x2, V::set1(4.89352455891786e-03f));
  p = V::mul(p, x);
  typename V::T q = V::set1(1.19825839466702e-06f);
  q = V::fmadd(q, x2, V::set1(1.18534705686654e-04f));
  q = V::fmadd(q, x2, V::set1(2.26843463243900e-03f));
  q = V::fmadd(q, x2, V::set1(4.89352518554385e-03f));
  return V::div(p, q);
}

// z[jj0:jj1) = act(z + bias (+ other)), in place. One short loop per gate block keeps
// many independent vectors in flight (a loop over all gates of a unit at once is
// bound by the latency of its exp -> divide -> tanh chain).
template <class V, bool kSigmoid>
JAXSEQ_INLINE void activate(float* z, const float* bias, const float* other, int jj0, int jj1) {
  for (int jj = jj0; jj < jj1; jj += V::kLanes) {
    typename V::T v = V::add(V::load(z + jj), V::load(bias + jj));
    if (other) v = V::add(v, V::load(other + jj));
    V::store(z + jj, kSigmoid ? v_sigmoid<V>(v) : v_tanh<V>(v));
  }
}

// Runs body.run<V>(jj0, jj1) over units [0, n): V16 over the multiples of 16 and V8
// over the rest where `wide`, else V8 throughout.
template <class Body>
JAXSEQ_AVX512 __attribute__((flatten)) void over_units16(const Body& body, int n) {
  const int n16 = n & ~15;
  body.template run<V16>(0, n16);
  body.template run<V8>(n16, n);
}

template <class Body>
void over_units(bool wide, const Body& body, int n) {
  if (wide) return over_units16(body, n);
  body.template run<V8>(0, n);
}

// ------------------------------------------------------------ packed products

// Two micro-kernels, picked per call (`wide`): AVX2 (6 rows x 16 columns, two ymm
// per row) and, where the CPU has it, AVX-512 (up to 12 rows x 32 columns, two zmm
// per row: twice the FMA width, and 24 accumulators to hide its latency). On a
// 2-vCPU Xeon with AVX-512 the AVX2 kernel reached 179 GFLOP/s at (T, B, D, H) =
// (50, 256, 256, 512), PyTorch's oneDNN 282 (README, "Speed").
// B's column panels are this wide (the last one narrower: N mod the width, a multiple of 8).
inline int panel_width(bool wide) { return wide ? 32 : 16; }

// Column panels, each stored k-major: panel at column c0 of width w holds
// src(k, c0 + c) at [c0 * K + k * w + c].
template <typename Src>
void pack(float* dst, int K, int N, bool wide, Src src) {
  const int pw = panel_width(wide);
  for (int c0 = 0; c0 < N; c0 += pw) {
    const int w = std::min(pw, N - c0);
    float* p = dst + static_cast<int64_t>(c0) * K;
    for (int k = 0; k < K; ++k)
      for (int c = 0; c < w; ++c) p[k * w + c] = src(k, c0 + c);
  }
}

// `pack` of src(k, c) = a[k * lda + col[c]]. A panel whose columns are contiguous in
// `a` (all but one that straddles two gates) is copied a row segment at a time.
void pack_columns(float* dst, int K, int N, bool wide, const float* a, int lda, const int* col) {
  const int pw = panel_width(wide);
  for (int c0 = 0; c0 < N; c0 += pw) {
    const int w = std::min(pw, N - c0);
    float* p = dst + static_cast<int64_t>(c0) * K;
    if (col[c0 + w - 1] - col[c0] == w - 1) {
      const float* src = a + col[c0];
      for (int k = 0; k < K; ++k)
        std::memcpy(p + k * w, src + static_cast<int64_t>(k) * lda, w * sizeof(float));
    } else {
      for (int k = 0; k < K; ++k)
        for (int c = 0; c < w; ++c) p[k * w + c] = a[static_cast<int64_t>(k) * lda + col[c0 + c]];
    }
  }
}

// The products read B packed (`pack`; a panel's row k at P + k * w) and A in
// place in one of two layouts (kTN):
//   false: C = A B, A row-major (element (r, k) at A[r * lda + k]): the recurrent steps;
//   true:  C += A^T B, A stored [K, M] (element (r, k) at A[k * lda + r]): the weight
//          gradients' updates.
template <bool kTN>
struct Operands {
  const float* a;
  int lda;
  const float* b;
  // kTN: A's K rows come in `steps` blocks, block s at a + s * a_step (one thread's
  // batch rows at consecutive time steps); B holds their steps * K rows in order
  int steps = 1;
  int64_t a_step = 0;
};

template <bool kTN>
inline const float* a_at(const float* as, Operands<kTN> o, int k, int r) {
  return kTN ? as + static_cast<int64_t>(k) * o.lda + r : as + r * o.lda + k;
}

// ---- AVX2: panels of 16 (NV = 2 ymm) or 8 (NV = 1)

// acc[MR][NV] += A[MR, K] @ B[K, 8 NV].
template <int MR, int NV, bool kTN>
__attribute__((always_inline)) inline void fma_panel(__m256 (&acc)[MR][NV], int K,
                                                     Operands<kTN> o) {
  const int steps = kTN ? o.steps : 1;
  for (int s = 0; s < steps; ++s) {
    const float* as = kTN ? o.a + s * o.a_step : o.a;
    const float* bs = o.b + static_cast<int64_t>(s) * K * (8 * NV);
    for (int k = 0; k < K; ++k) {
      const float* brow = bs + k * (8 * NV);
      __m256 v[NV];
#pragma GCC unroll 2
      for (int j = 0; j < NV; ++j) v[j] = _mm256_loadu_ps(brow + 8 * j);
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        const __m256 x = _mm256_broadcast_ss(a_at(as, o, k, r));
#pragma GCC unroll 2
        for (int j = 0; j < NV; ++j) acc[r][j] = _mm256_fmadd_ps(x, v[j], acc[r][j]);
      }
    }
  }
}

// C[MR, 8 NV] = A1[MR, K1] @ B1 + A2[MR, K2] @ B2 (kTN: C += A1^T B1), with the tile
// in registers throughout (no store and reload between the two products).
template <int MR, int NV, bool kTN>
inline void micro(int K1, Operands<kTN> o1, int K2, Operands<kTN> o2, float* C, int ldc) {
  __m256 acc[MR][NV];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j)
      acc[r][j] = kTN ? _mm256_loadu_ps(C + r * ldc + 8 * j) : _mm256_setzero_ps();
  fma_panel<MR, NV>(acc, K1, o1);
  fma_panel<MR, NV>(acc, K2, o2);
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) _mm256_storeu_ps(C + r * ldc + 8 * j, acc[r][j]);
}

template <int NV, bool kTN>
inline void micro_rows(int mr, int K1, Operands<kTN> o1, int K2, Operands<kTN> o2, float* C,
                       int ldc) {
  switch (mr) {
    case 6: micro<6, NV>(K1, o1, K2, o2, C, ldc); break;
    case 5: micro<5, NV>(K1, o1, K2, o2, C, ldc); break;
    case 4: micro<4, NV>(K1, o1, K2, o2, C, ldc); break;
    case 3: micro<3, NV>(K1, o1, K2, o2, C, ldc); break;
    case 2: micro<2, NV>(K1, o1, K2, o2, C, ldc); break;
    default: micro<1, NV>(K1, o1, K2, o2, C, ldc); break;
  }
}

// ---- AVX-512: panels of 32 or 24 (NV = 2 zmm) or 16 or 8 (NV = 1); `last` masks
// the lanes of the last vector that lie in the panel (all 16, or the low 8)

template <int MR, int NV, bool kTN>
JAXSEQ_AVX512 __attribute__((always_inline)) inline void fma_panel512(
    __m512 (&acc)[MR][NV], int K, Operands<kTN> o, int w, __mmask16 last) {
  const int steps = kTN ? o.steps : 1;
  for (int s = 0; s < steps; ++s) {
    const float* as = kTN ? o.a + s * o.a_step : o.a;
    const float* brow = o.b + static_cast<int64_t>(s) * K * w;
    for (int k = 0; k < K; ++k, brow += w) {
      __m512 v[NV];
      v[NV - 1] = _mm512_maskz_loadu_ps(last, brow + 16 * (NV - 1));
      if (NV == 2) v[0] = _mm512_loadu_ps(brow);
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
        const __m512 x = _mm512_set1_ps(*a_at(as, o, k, r));
#pragma GCC unroll 2
        for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(x, v[j], acc[r][j]);
      }
    }
  }
}

template <int MR, int NV, bool kTN>
JAXSEQ_AVX512 inline void micro512(int K1, Operands<kTN> o1, int K2, Operands<kTN> o2, int w,
                                   float* C, int ldc) {
  const __mmask16 last = w % 16 ? 0x00FF : 0xFFFF;
  __m512 acc[MR][NV];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) {
      const __mmask16 m = j == NV - 1 ? last : 0xFFFF;
      acc[r][j] = kTN ? _mm512_maskz_loadu_ps(m, C + r * ldc + 16 * j) : _mm512_setzero_ps();
    }
  fma_panel512<MR, NV>(acc, K1, o1, w, last);
  fma_panel512<MR, NV>(acc, K2, o2, w, last);
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j)
      _mm512_mask_storeu_ps(C + r * ldc + 16 * j, j == NV - 1 ? last : 0xFFFF, acc[r][j]);
}

template <int NV, bool kTN>
JAXSEQ_AVX512 void micro512_rows(int mr, int K1, Operands<kTN> o1, int K2, Operands<kTN> o2,
                                 int w, float* C, int ldc) {
  switch (mr) {
    case 12: micro512<12, NV>(K1, o1, K2, o2, w, C, ldc); break;
    case 11: micro512<11, NV>(K1, o1, K2, o2, w, C, ldc); break;
    case 10: micro512<10, NV>(K1, o1, K2, o2, w, C, ldc); break;
    case 9: micro512<9, NV>(K1, o1, K2, o2, w, C, ldc); break;
    case 8: micro512<8, NV>(K1, o1, K2, o2, w, C, ldc); break;
    case 7: micro512<7, NV>(K1, o1, K2, o2, w, C, ldc); break;
    case 6: micro512<6, NV>(K1, o1, K2, o2, w, C, ldc); break;
    case 5: micro512<5, NV>(K1, o1, K2, o2, w, C, ldc); break;
    case 4: micro512<4, NV>(K1, o1, K2, o2, w, C, ldc); break;
    case 3: micro512<3, NV>(K1, o1, K2, o2, w, C, ldc); break;
    case 2: micro512<2, NV>(K1, o1, K2, o2, w, C, ldc); break;
    default: micro512<1, NV>(K1, o1, K2, o2, w, C, ldc); break;
  }
}

// Rows go in blocks of at most `most` (AVX2 6, AVX-512 12), as even as fits (32
// rows in AVX2 as 5+5+6+5+5+6, not 5*6 + 2; 8 as 4+4, not 6+2): a block of 1-3
// rows leaves too few independent accumulators to hide the FMA latency.
inline int row_blocks(int M, int most) { return (M + most - 1) / most; }

// Asks for the rows [r0, r0 + rows) x [c0, c0 + w) of C in L1 (two cache lines per row
// of a 32-wide panel).
inline void prefetch_tile(const float* C, int ldc, int r0, int rows, int c0, int w) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < w; c += 16)
      _mm_prefetch(reinterpret_cast<const char*>(C + static_cast<int64_t>(r0 + r) * ldc + c0 + c),
                   _MM_HINT_T0);
}

// C[M, N] = A1[M, K1] @ B1[K1, N] + A2[M, K2] @ B2[K2, N] (kTN: C += A1^T B1);
// N a multiple of 8. `prefetch` (kTN): each tile asks for the next one's rows of C
// first, so that they arrive while it computes.
template <bool kTN>
void gemm2(bool wide, int M, int N, int K1, Operands<kTN> o1, int K2, Operands<kTN> o2,
           float* C, int ldc, bool prefetch = false) {
  const int blocks = row_blocks(M, wide ? 12 : 6), pw = panel_width(wide);
  // row r0 of A, and the panel at column c0 of B
  auto at = [](Operands<kTN> o, int K, int r0, int c0) {
    const float* panel = o.b + static_cast<int64_t>(c0) * K * o.steps;
    return Operands<kTN>{kTN ? o.a + r0 : o.a + r0 * o.lda, o.lda, panel, o.steps, o.a_step};
  };
  for (int c0 = 0; c0 < N; c0 += pw) {
    const int w = std::min(pw, N - c0);
    for (int i = 0; i < blocks; ++i) {
      const int r0 = M * i / blocks, mr = M * (i + 1) / blocks - r0;
      if (kTN && prefetch) {  // the next tile: the next row block, else the next panel's first
        const int next = (i + 1) % blocks, c1 = next == 0 ? c0 + pw : c0;
        if (c1 < N) {
          const int n0 = M * next / blocks;
          prefetch_tile(C, ldc, n0, M * (next + 1) / blocks - n0, c1, std::min(pw, N - c1));
        }
      }
      const auto p1 = at(o1, K1, r0, c0), p2 = at(o2, K2, r0, c0);
      float* c = C + r0 * ldc + c0;
      if (wide && w > 16)
        micro512_rows<2>(mr, K1, p1, K2, p2, w, c, ldc);
      else if (wide)
        micro512_rows<1>(mr, K1, p1, K2, p2, w, c, ldc);
      else if (w == 16)
        micro_rows<2>(mr, K1, p1, K2, p2, c, ldc);
      else
        micro_rows<1>(mr, K1, p1, K2, p2, c, ldc);
    }
  }
}

// C[M, N] = A1[M, K1] @ P1[K1, N] + A2[M, K2] @ P2[K2, N]: A row-major, P packed;
// N a multiple of 8.
void gemm_packed(bool wide, int M, int N, int K1, const float* A1, int lda1, const float* P1,
                 int K2, const float* A2, int lda2, const float* P2, float* C, int ldc) {
  gemm2<false>(wide, M, N, K1, {A1, lda1, P1}, K2, {A2, lda2, P2}, C, ldc);
}

// C[M, N] += Σ_s A_s[K, M]^T @ P_s over `steps` blocks: A_s = A + s * a_step (rows
// of lda) read in place, P the steps * K rows of B packed; N a multiple of 8.
// The weight gradients' update Σ_t Σ_b h_{t-1}[b]^T dz_t[b]; `prefetch` as in gemm2.
void gemm_tn_add(bool wide, int M, int N, int K, int steps, const float* A, int lda,
                 int64_t a_step, const float* P, float* C, int ldc, bool prefetch) {
  const Operands<true> o{A, lda, P, steps, a_step};
  gemm2<true>(wide, M, N, K, o, 0, o, C, ldc, prefetch);
}

// ------------------------------------------------------------------- scratch

// Memory that calls reuse: blocks of up to kKeptScratchBytes go back to a free list
// shared by all threads when their holder is done, and the next request takes the
// smallest kept block that fits it (or replaces the largest smaller one, so the
// list holds no more blocks than were ever in use at once). Allocated afresh on
// every call, the forward kernel's 6 MiB of packed weights per thread at (T, B, D,
// H) = (50, 256, 256, 512) were page-faulted in every time: 2,016 faults and 3.8 ms
// of system time in an LSTM call of one step there (`python -m
// benchmarks.page_faults`; README, "Speed"). The contents are not initialised; an
// empty request holds no block (data() is null).
constexpr size_t kKeptScratchBytes = size_t{32} << 20;

class Scratch {
 public:
  explicit Scratch(size_t n) : kept_(n > 0 && n * sizeof(float) <= kKeptScratchBytes) {
    if (n == 0) return;
    if (kept_) {
      std::lock_guard<std::mutex> lock(mu());
      std::vector<Block>& blocks = free_blocks();
      auto fit = blocks.end(), smaller = blocks.end();
      for (auto it = blocks.begin(); it != blocks.end(); ++it) {
        if (it->size >= n && (fit == blocks.end() || it->size < fit->size)) fit = it;
        if (it->size < n && (smaller == blocks.end() || it->size > smaller->size)) smaller = it;
      }
      if (fit == blocks.end()) fit = smaller;
      if (fit != blocks.end()) {
        block_ = std::move(*fit);
        blocks.erase(fit);
      }
    }
    if (block_.size < n || !block_.data) {
      block_.data.reset();  // before the new one: the two need not coexist
      block_.data.reset(new float[std::max<size_t>(n, 1)]);
      block_.size = n;
    }
  }
  ~Scratch() {
    if (!kept_) return;
    std::lock_guard<std::mutex> lock(mu());
    free_blocks().push_back(std::move(block_));
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* data() const { return block_.data.get(); }

 private:
  struct Block {
    std::unique_ptr<float[]> data;
    size_t size = 0;
  };
  static std::mutex& mu() {
    static std::mutex* m = new std::mutex;  // never destroyed: helpers may hold blocks at exit
    return *m;
  }
  static std::vector<Block>& free_blocks() {
    static std::vector<Block>* blocks = new std::vector<Block>;
    return *blocks;
  }
  const bool kept_;
  Block block_;
};

// ------------------------------------------------------------------- threads

class Barrier {  // sense-reversing spin barrier; yields after a short spin
 public:
  explicit Barrier(int n) : n_(n), count_(n), sense_(false) {}
  void wait(bool& local_sense) {
    local_sense = !local_sense;
    if (count_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      count_.store(n_, std::memory_order_relaxed);
      sense_.store(local_sense, std::memory_order_release);
      return;
    }
    int spins = 0;
    while (sense_.load(std::memory_order_acquire) != local_sense) {
      if (++spins < 4000) {
        _mm_pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  const int n_;
  std::atomic<int> count_;
  std::atomic<bool> sense_;
};

// One thread's share: batch rows [b0, b1) and hidden units [j0, j1) of every gate.
struct Part {
  int b0, b1, j0, j1;
};

// Splits the batch over threads where each gets at least 4 rows (the threads then
// never wait for each other), else the hidden units in blocks of 8 (one barrier
// per step). `shared` says whether the parts must meet at every step.
std::vector<Part> partition(int B, int H, int threads, bool& shared) {
  std::vector<Part> parts;
  threads = std::max(1, threads);
  if (B >= 4 * threads || H / 8 < 2) {
    threads = std::max(1, std::min(threads, B / 4));
    for (int k = 0; k < threads; ++k) parts.push_back({B * k / threads, B * (k + 1) / threads, 0, H});
    shared = false;
  } else {
    const int blocks = H / 8;
    threads = std::min(threads, blocks);
    for (int k = 0; k < threads; ++k)
      parts.push_back({0, B, 8 * (blocks * k / threads), 8 * (blocks * (k + 1) / threads)});
    shared = threads > 1;
  }
  return parts;
}

// Helper threads that outlive a call. Starting them on every call made the LSTM
// forward pass at (T, B, D, H) = (100, 32, 32, 128) 1.3-1.5x slower on a 2-vCPU
// VM (README, "Speed"). They wait on a condition variable between calls, taking
// no CPU from XLA's own work. The pool serves one call at a time; a call that
// finds it busy (two kernels at once from XLA's threads) starts threads of its own.
class Pool {
 public:
  static Pool& get() {
    // never destroyed (helpers may be waiting at exit); a forked child, which has
    // none of its parent's helpers, starts a pool of its own
    static std::atomic<Pool*> pool{nullptr};
    Pool* p = pool.load(std::memory_order_acquire);
    if (p == nullptr || p->pid_ != getpid()) {
      static std::mutex create;
      std::lock_guard<std::mutex> lock(create);
      p = pool.load(std::memory_order_acquire);
      if (p == nullptr || p->pid_ != getpid()) {
        p = new Pool();
        pool.store(p, std::memory_order_release);
      }
    }
    return *p;
  }

  // Runs job(k) for k in [0, n): k = 0 on the caller, the others on helpers.
  // Returns false, running nothing, when another call holds the pool.
  template <typename F>
  bool run(int n, F& job) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    for (; helpers_ < n - 1; ++helpers_) {
      const int k = helpers_ + 1;
      tids_.emplace_back(new std::atomic<pid_t>(0));
      std::thread([this, k] { serve(k); }).detach();
    }
    keep_off_caller(n - 1);
    job_ = [&job](int k) { job(k); };
    {
      std::lock_guard<std::mutex> lock(mu_);
      active_ = n - 1;
      pending_.store(n - 1, std::memory_order_release);
      ++generation_;
    }
    wake_.notify_all();
    job(0);
    for (int spins = 0; pending_.load(std::memory_order_acquire) > 0; ++spins) {
      if (spins < 4000) _mm_pause(); else std::this_thread::yield();
    }
    return true;
  }

 private:
  // Lets helpers 1..count run on any CPU this process may use but the caller's.
  // Without it, Linux often woke a helper on the caller's CPU (the waker's), where
  // it waited behind the caller while the other CPU idled: the call's two halves
  // ran one after the other, at 2x the time (seen on a 2-vCPU VM whenever the
  // helpers had slept for a few ms; README, "Speed"). The masks change only when
  // the caller's CPU does.
  void keep_off_caller(int count) {
    const int cpu = sched_getcpu();
    if (cpu < 0 || cpu == caller_cpu_ || !CPU_ISSET(cpu, &allowed_) || CPU_COUNT(&allowed_) < 2)
      return;
    cpu_set_t mask = allowed_;
    CPU_CLR(cpu, &mask);
    for (int k = 1; k <= count; ++k) {
      pid_t tid;
      while ((tid = tids_[k - 1]->load(std::memory_order_acquire)) == 0) _mm_pause();
      sched_setaffinity(tid, sizeof(mask), &mask);
    }
    caller_cpu_ = cpu;
  }

  void serve(int k) {
    tids_[k - 1]->store(static_cast<pid_t>(syscall(SYS_gettid)), std::memory_order_release);
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return generation_ != seen && k <= active_; });
        seen = generation_;
      }
      job_(k);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  Pool() { sched_getaffinity(0, sizeof(allowed_), &allowed_); }

  const pid_t pid_ = getpid();
  cpu_set_t allowed_;    // the CPUs this process could use when the pool started
  int caller_cpu_ = -1;  // the CPU the helpers' masks leave out
  std::vector<std::unique_ptr<std::atomic<pid_t>>> tids_;  // helper k's thread id at k - 1
  std::mutex busy_, mu_;
  std::condition_variable wake_;
  int helpers_ = 0;  // helper k (1-based) serves job(k)
  std::function<void(int)> job_;
  uint64_t generation_ = 0;
  int active_ = 0;
  std::atomic<int> pending_{0};
};

template <typename F>
void run_threads(const std::vector<Part>& parts, bool shared, F body) {
  const int n = static_cast<int>(parts.size());
  std::vector<std::unique_ptr<Barrier>> barriers;
  for (int k = 0; k < (shared ? 1 : n); ++k) barriers.emplace_back(new Barrier(shared ? n : 1));
  auto run = [&](int k) {
    bool sense = false;
    body(parts[k], *barriers[shared ? 0 : k], sense);
  };
  if (n == 1) return run(0);
  if (Pool::get().run(n, run)) return;
  std::vector<std::thread> pool;
  for (int k = 1; k < n; ++k) pool.emplace_back(run, k);
  run(0);
  for (auto& t : pool) t.join();
}

int num_gates(int cell) { return cell == kLstm ? 4 : (cell == kGru ? 3 : 1); }
int num_acts(int cell) { return cell == kLstm ? 4 : (cell == kGru ? 3 : 1); }

struct Shapes {
  int T, B, D, H;
};

// ------------------------------------------------------------------- forward

struct Forward {
  int cell;
  bool reverse;
  Shapes s;
  const float *xs, *w_x, *b, *w_h, *b_hn, *h0, *c0;
  const bool* valid;
  float *ys, *hT, *cT;
  // residuals for the backward pass, null when not saved: the activations (Elman h;
  // LSTM i, f, g, o; GRU r, u, n), h_{t-1}, and `extra`: LSTM c_{t-1}, GRU
  // h_{t-1} U_n + b_hn (the recurrent candidate before the reset gate)
  float *acts, *hprev, *extra;
  bool wide = false;  // the AVX-512 micro-kernel
  // hprev holds [x_t | h_{t-1}] transposed, [D + H, T B] (column t B + b), the layout
  // in which XLA's product for the weight gradients, [x | h]^T dz, ran fastest
  bool xh_t = false;
};

// One batch row's gates and state update at a thread's units, every pointer at its
// first unit j0: z, the row's pre-activations for those units, gate-major (gate g's at
// z + g n; GRU: zr, those of h U, the reset gate's product apart); c, the thread's
// LSTM cell state, updated in place; hp and hn, h_{t-1} and h_t; y the output; act
// and extra the residuals (null when not saved; LSTM's extra is written before).
struct ForwardUnits {
  int cell, n, H;
  float* z;
  const float *zr, *b, *b_hn, *hp;
  float *c, *hn, *y, *act, *extra;

  template <class V>
  JAXSEQ_INLINE void run(int jj0, int jj1) const {
    using T = typename V::T;
    if (cell == kElman) {
      activate<V, false>(z, b, nullptr, jj0, jj1);
    } else if (cell == kLstm) {
      activate<V, true>(z, b, nullptr, jj0, jj1);
      activate<V, true>(z + n, b + H, nullptr, jj0, jj1);
      activate<V, false>(z + 2 * n, b + 2 * H, nullptr, jj0, jj1);
      activate<V, true>(z + 3 * n, b + 3 * H, nullptr, jj0, jj1);
    } else {
      activate<V, true>(z, b, zr, jj0, jj1);
      activate<V, true>(z + n, b + H, zr + n, jj0, jj1);
    }
    const T one = V::set1(1.0f);
    for (int jj = jj0; jj < jj1; jj += V::kLanes) {
      T h;
      if (cell == kElman) {
        h = V::load(z + jj);
        if (act) V::store(act + jj, h);
      } else if (cell == kLstm) {
        const T i = V::load(z + jj), fg = V::load(z + n + jj);
        const T g = V::load(z + 2 * n + jj), o = V::load(z + 3 * n + jj);
        const T ct = V::fmadd(fg, V::load(c + jj), V::mul(i, g));
        V::store(c + jj, ct);
        h = V::mul(o, v_tanh<V>(ct));
        if (act) {
          V::store(act + jj, i);
          V::store(act + H + jj, fg);
          V::store(act + 2 * H + jj, g);
          V::store(act + 3 * H + jj, o);
        }
      } else {  // GRU, reset after the product: n = tanh(x_n + r * (h U_n + b_hn))
        const T r = V::load(z + jj), u = V::load(z + n + jj);
        const T hh = V::add(V::load(zr + 2 * n + jj), V::load(b_hn + jj));
        const T xn = V::add(V::load(z + 2 * n + jj), V::load(b + 2 * H + jj));
        const T cand = v_tanh<V>(V::fmadd(r, hh, xn));
        h = V::fmadd(V::sub(one, u), cand, V::mul(u, V::load(hp + jj)));
        if (act) {
          V::store(act + jj, r);
          V::store(act + H + jj, u);
          V::store(act + 2 * H + jj, cand);
          V::store(extra + jj, hh);
        }
      }
      V::store(hn + jj, h);
      V::store(y + jj, h);
    }
  }
};

void forward_thread(const Forward& f, const Part& part, float* h_buf,
                    Barrier& barrier, bool& sense) {
  const int j0 = part.j0, j1 = part.j1, b0 = part.b0, b1 = part.b1, M = b1 - b0;
  const int T = f.s.T, B = f.s.B, D = f.s.D, H = f.s.H;
  const int G = num_gates(f.cell), A = num_acts(f.cell);
  const int n = j1 - j0, N = G * n;
  // this thread's packed W and U, then zx, zh and c (indexed by the row b - b0 of
  // this thread's rows)
  const size_t wp_n = static_cast<size_t>(D) * N, up_n = static_cast<size_t>(H) * N;
  const size_t zx_n = static_cast<size_t>(M) * N, zh_n = f.cell == kGru ? zx_n : 0;
  const size_t c_n = f.cell == kLstm ? static_cast<size_t>(M) * n : 0;
  const Scratch scratch(wp_n + up_n + zx_n + zh_n + c_n);
  float* const wp = scratch.data();
  float* const up = wp + wp_n;
  float* const zx = up + up_n;
  float* const zh = zx + zx_n;
  float* const c = zh + zh_n;
  // this thread's columns of W and U, gate-major: column g * n + jj is g * H + j0 + jj
  std::vector<int> col(N);
  for (int k = 0; k < N; ++k) col[k] = (k / n) * H + j0 + k % n;
  pack_columns(wp, D, N, f.wide, f.w_x, G * H, col.data());
  pack_columns(up, H, N, f.wide, f.w_h, G * H, col.data());
  if (f.cell == kLstm)
    for (int b = b0; b < b1; ++b)
      std::memcpy(&c[(b - b0) * n], f.c0 + b * H + j0, n * sizeof(float));
  float* h_cur = h_buf;
  float* h_next = h_buf + B * H;
  for (int b = b0; b < b1; ++b)
    std::memcpy(h_cur + b * H + j0, f.h0 + b * H + j0, n * sizeof(float));
  barrier.wait(sense);

  for (int step = 0; step < T; ++step) {
    const int t = f.reverse ? T - 1 - step : step;
    const float* x_t = f.xs + static_cast<int64_t>(t) * B * D;
    if (f.cell == kGru) {  // the reset gate multiplies the recurrent product alone
      gemm_packed(f.wide, M, N, D, x_t + b0 * D, D, wp, 0, x_t, D, wp, zx, N);
      gemm_packed(f.wide, M, N, H, h_cur + b0 * H, H, up, 0, x_t, D, wp, zh, N);
    } else {
      gemm_packed(f.wide, M, N, D, x_t + b0 * D, D, wp, H, h_cur + b0 * H, H, up, zx, N);
    }
    const int64_t row = static_cast<int64_t>(t) * B;
    if (f.hprev && f.xh_t) {  // this thread's rows and units; its share [d0, d1) of x's
      const int64_t TB = static_cast<int64_t>(T) * B;
      const int d0 = D * j0 / H, d1 = D * j1 / H;
      for (int d = d0; d < d1; ++d)
        for (int b = b0; b < b1; ++b) f.hprev[d * TB + row + b] = x_t[b * D + d];
      for (int j = j0; j < j1; ++j)
        for (int b = b0; b < b1; ++b) f.hprev[(D + j) * TB + row + b] = h_cur[b * H + j];
    }
    for (int b = b0; b < b1; ++b) {
      const bool ok = f.valid == nullptr || f.valid[row + b];
      float* y = f.ys + (row + b) * H;
      const float* hp = h_cur + b * H;
      float* hn = h_next + b * H;
      float* act = f.acts ? f.acts + (row + b) * A * H : nullptr;
      if (f.hprev && !f.xh_t) std::memcpy(f.hprev + (row + b) * H + j0, hp + j0, n * sizeof(float));
      float* extra = f.extra ? f.extra + (row + b) * H : nullptr;
      if (extra && f.cell == kLstm) std::memcpy(extra + j0, &c[(b - b0) * n], n * sizeof(float));
      if (!ok) {
        std::memcpy(hn + j0, hp + j0, n * sizeof(float));
        std::memset(y + j0, 0, n * sizeof(float));
        if (act)
          for (int a = 0; a < A; ++a) std::memset(act + a * H + j0, 0, n * sizeof(float));
        if (extra && f.cell == kGru) std::memset(extra + j0, 0, n * sizeof(float));
        continue;
      }
      const ForwardUnits units{f.cell, n, H, &zx[(b - b0) * N],
                               f.cell == kGru ? &zh[(b - b0) * N] : nullptr, f.b + j0,
                               f.b_hn ? f.b_hn + j0 : nullptr, hp + j0,
                               f.cell == kLstm ? &c[(b - b0) * n] : nullptr, hn + j0, y + j0,
                               act ? act + j0 : nullptr, extra ? extra + j0 : nullptr};
      over_units(f.wide, units, n);
    }
    barrier.wait(sense);  // h_next complete: every thread's next product reads all of it
    std::swap(h_cur, h_next);
  }
  for (int b = b0; b < b1; ++b) {
    std::memcpy(f.hT + b * H + j0, h_cur + b * H + j0, n * sizeof(float));
    if (f.cell == kLstm) std::memcpy(f.cT + b * H + j0, &c[(b - b0) * n], n * sizeof(float));
  }
}

// ------------------------------------------------------------------ backward

struct Backward {
  int cell;
  bool reverse;
  Shapes s;
  const float *xs, *w_h, *acts, *hprev, *extra, *dys, *dhT, *dcT;  // as in Forward
  const bool* valid;
  // dzx: [T, B, G H], the gradient of every gate's pre-activation; dzh (GRU only):
  // [T, B, H], that of h U_n + b_hn (dn * r), which with dzx's first 2H is what the
  // recurrent product sees. jaxseq/native/__init__.py lets dzx be acts and dzh be
  // extra (same shapes): each step reads a unit's residuals before it writes that
  // unit's gradients.
  float *dzx, *dzh;
  float *dh0, *dc0;
  // the weight-gradient updates sum about this many rows of dz (a thread's batch rows
  // at consecutive steps) at a time
  int chunk_rows;
  bool wide = false;  // the AVX-512 micro-kernel
  // the updates load each tile of the gradients ahead (gemm2's `prefetch`): between
  // two updates the rest of the step's work evicts them from cache
  bool prefetch = false;
};

// Where one thread sums its share of the weight and bias gradients: [D, G H],
// [H, G H], [G H] and (GRU) [H].
struct Grads {
  float *dw_x, *dw_h, *db, *db_hn;
};

// g += the contribution of steps [t0, t0 + steps) from this thread's rows and units:
// dW += x_t^T dz_t, dU += h_{t-1}^T dz_t (GRU's U_n: dzh = dn * r), db += Σ_b dz_t.
// Done every few steps while their dz_t are in cache, which one product over all
// steps after the loop would read back from memory.
void add_weight_grads(const Backward& f, const Part& part, int t0, int steps, const Grads& g,
                      float* packed, std::vector<int64_t>& rows) {
  const int B = f.s.B, D = f.s.D, H = f.s.H, K = num_gates(f.cell) * H;
  const int b0 = part.b0, M = part.b1 - part.b0, j0 = part.j0, n = part.j1 - part.j0;
  const int R = steps * M;  // the rows k = s * M + b of the sum, at [T, B] row rows[k]
  rows.resize(R);
  for (int k = 0; k < R; ++k) rows[k] = (static_cast<int64_t>(t0) + k / M) * B + b0 + k % M;
  for (int gate = 0; gate < num_gates(f.cell); ++gate) {
    const int c = gate * H + j0;
    const float* dz = f.dzx + c;
    pack(packed, R, n, f.wide, [&](int k, int col) { return dz[rows[k] * K + col]; });
    const int64_t first = rows[0], step = int64_t{B};  // A's rows: M per step, B apart
    gemm_tn_add(f.wide, D, n, M, steps, f.xs + first * D, D, step * D, packed, g.dw_x + c, K,
                f.prefetch);
    const bool reset = f.cell == kGru && gate == 2;
    const float* dzr = f.dzh + j0;  // GRU's U_n sees dzh = dn * r, not dn
    if (reset) pack(packed, R, n, f.wide, [&](int k, int col) { return dzr[rows[k] * H + col]; });
    gemm_tn_add(f.wide, H, n, M, steps, f.hprev + first * H, H, step * H, packed, g.dw_h + c, K,
                f.prefetch);
    for (int k = 0; k < R; ++k)
      for (int jj = 0; jj < n; ++jj) {
        g.db[c + jj] += dz[rows[k] * K + jj];
        if (reset) g.db_hn[j0 + jj] += dzr[rows[k] * H + jj];
      }
  }
}

// One batch row's pre-activation gradients at a thread's units, every pointer at its
// first unit: d = dh + dy is ∂h_t; act, extra and hp the step's residuals; dc (LSTM)
// ∂c_t in, ∂c_{t-1} out; direct, what reaches h_{t-1} other than through U (GRU: d u).
// dzx and dzh may alias act and extra: each vector's residuals are read before its
// gradients are written.
struct BackwardUnits {
  int cell, H;
  const float *dh, *dy, *act, *extra, *hp;
  float *dc, *dzx, *dzh, *direct;

  template <class V>
  JAXSEQ_INLINE void run(int jj0, int jj1) const {
    using T = typename V::T;
    const T one = V::set1(1.0f);
    for (int jj = jj0; jj < jj1; jj += V::kLanes) {
      const T d = V::add(V::load(dh + jj), V::load(dy + jj));
      T dir = V::set1(0.0f);
      if (cell == kElman) {
        const T h = V::load(act + jj);
        V::store(dzx + jj, V::mul(d, V::fnmadd(h, h, one)));
      } else if (cell == kLstm) {
        const T i = V::load(act + jj), fg = V::load(act + H + jj);
        const T g = V::load(act + 2 * H + jj), o = V::load(act + 3 * H + jj);
        const T cp = V::load(extra + jj);
        const T tc = v_tanh<V>(V::fmadd(fg, cp, V::mul(i, g)));
        const T dct = V::fmadd(V::mul(d, o), V::fnmadd(tc, tc, one), V::load(dc + jj));
        V::store(dc + jj, V::mul(dct, fg));
        const T di = V::mul(dct, g), dg = V::mul(dct, i);
        const T df = V::mul(dct, cp), dout = V::mul(d, tc);
        V::store(dzx + jj, V::mul(di, V::mul(i, V::sub(one, i))));
        V::store(dzx + H + jj, V::mul(df, V::mul(fg, V::sub(one, fg))));
        V::store(dzx + 2 * H + jj, V::mul(dg, V::fnmadd(g, g, one)));
        V::store(dzx + 3 * H + jj, V::mul(dout, V::mul(o, V::sub(one, o))));
      } else {
        const T r = V::load(act + jj), u = V::load(act + H + jj);
        const T cand = V::load(act + 2 * H + jj);
        const T hh = V::load(extra + jj);
        const T h_old = V::load(hp + jj);
        const T du = V::mul(d, V::sub(h_old, cand));
        const T dn = V::mul(V::mul(d, V::sub(one, u)), V::fnmadd(cand, cand, one));
        const T dr = V::mul(V::mul(dn, hh), V::mul(r, V::sub(one, r)));
        const T dpu = V::mul(du, V::mul(u, V::sub(one, u)));
        V::store(dzx + jj, dr);
        V::store(dzx + H + jj, dpu);
        V::store(dzx + 2 * H + jj, dn);
        V::store(dzh + jj, V::mul(dn, r));
        dir = V::mul(d, u);
      }
      V::store(direct + jj, dir);
    }
  }
};

void backward_thread(const Backward& f, const Part& part, const Grads& grads, Barrier& barrier,
                     bool& sense) {
  const int j0 = part.j0, j1 = part.j1, b0 = part.b0, b1 = part.b1, M = b1 - b0;
  const int T = f.s.T, B = f.s.B, H = f.s.H;
  const int G = num_gates(f.cell), A = num_acts(f.cell);
  const int n = j1 - j0, K = G * H;
  // U^T restricted to this thread's units, [G*H, n], packed in two row segments:
  // [0, K1) multiplies dzx's first K1 entries, [K1, K) multiplies dzh (GRU only)
  const int K1 = f.cell == kGru ? 2 * H : K, K2 = K - K1;
  // then dh, dc, direct and prod, indexed by the row b - b0 of this thread's rows
  const size_t u1_n = static_cast<size_t>(K1) * n, u2_n = static_cast<size_t>(K2) * n;
  const size_t row_n = static_cast<size_t>(M) * n, dc_n = f.cell == kLstm ? row_n : 0;
  const Scratch scratch(u1_n + u2_n + 3 * row_n + dc_n);
  float* const utp1 = scratch.data();
  float* const utp2 = utp1 + u1_n;
  float* const dh = utp2 + u2_n;
  float* const direct = dh + row_n;
  float* const prod = direct + row_n;
  float* const dc = prod + row_n;
  pack(utp1, K1, n, f.wide, [&](int k, int c) { return f.w_h[(j0 + c) * K + k]; });
  pack(utp2, K2, n, f.wide, [&](int k, int c) { return f.w_h[(j0 + c) * K + K1 + k]; });
  for (int b = b0; b < b1; ++b) {
    std::memcpy(&dh[(b - b0) * n], f.dhT + b * H + j0, n * sizeof(float));
    if (f.cell == kLstm) std::memcpy(&dc[(b - b0) * n], f.dcT + b * H + j0, n * sizeof(float));
  }

  const int chunk = std::max(1, f.chunk_rows / M);
  int pending = 0;
  // one gate's dz over a chunk's rows, packed: kept between calls, as above (2048
  // rows of a 512-unit gate are 4 MiB, which a std::vector mapped afresh every call)
  const Scratch packed(grads.dw_h != nullptr ? static_cast<size_t>(std::min(chunk, T)) * M * n : 0);
  std::vector<int64_t> rows;
  for (int step = T - 1; step >= 0; --step) {
    const int t = f.reverse ? T - 1 - step : step;
    const int64_t row = static_cast<int64_t>(t) * B;
    for (int b = b0; b < b1; ++b) {
      const int q = (b - b0) * n;
      const bool ok = f.valid == nullptr || f.valid[row + b];
      float* dzx = f.dzx + (row + b) * K;
      float* dzh = f.dzh ? f.dzh + (row + b) * H : nullptr;
      if (!ok) {  // the carry passed through untouched: so does its gradient
        for (int g = 0; g < G; ++g) std::memset(dzx + g * H + j0, 0, n * sizeof(float));
        if (dzh) std::memset(dzh + j0, 0, n * sizeof(float));
        std::memcpy(&direct[q], &dh[q], n * sizeof(float));
        continue;
      }
      const float* extra = f.extra ? f.extra + (row + b) * H + j0 : nullptr;
      const BackwardUnits units{f.cell, H, &dh[q], f.dys + (row + b) * H + j0,
                                f.acts + (row + b) * A * H + j0, extra,
                                f.cell == kGru ? f.hprev + (row + b) * H + j0 : nullptr,
                                f.cell == kLstm ? &dc[q] : nullptr, dzx + j0,
                                dzh ? dzh + j0 : nullptr, &direct[q]};
      over_units(f.wide, units, n);
    }
    barrier.wait(sense);  // dz_t complete for every unit: each thread's product reads all of it
    const float* dzh_t = f.dzh ? f.dzh + (row + b0) * H : f.dzx;  // (read only when K2 > 0)
    gemm_packed(f.wide, M, n, K1, f.dzx + (row + b0) * K, K, utp1, K2, dzh_t, H, utp2, prod, n);
    for (int q = 0; q < M * n; ++q) dh[q] = prod[q] + direct[q];
    // the weight gradients of the pending steps, whose t are contiguous
    if (grads.dw_h != nullptr && (++pending == chunk || step == 0)) {
      add_weight_grads(f, part, f.reverse ? t - pending + 1 : t, pending, grads, packed.data(), rows);
      pending = 0;
    }
    // no second barrier: the next step's elementwise part reads only this thread's
    // units of dh, and writes dz_{t-1}, which no product reads before the next barrier
  }
  for (int b = b0; b < b1; ++b) {
    std::memcpy(f.dh0 + b * H + j0, &dh[(b - b0) * n], n * sizeof(float));
    if (f.cell == kLstm) std::memcpy(f.dc0 + b * H + j0, &dc[(b - b0) * n], n * sizeof(float));
  }
}

// ---------------------------------------------------------------- FFI glue

ffi::Error check_wide(int64_t wide) {
  __builtin_cpu_init();
  if (wide != 0 && !__builtin_cpu_supports("avx512f"))
    return ffi::Error::InvalidArgument("jaxseq native: this CPU lacks AVX-512 (wide=1)");
  return ffi::Error::Success();
}

ffi::Error check_cell(int64_t cell, int64_t H) {
  if (cell < kElman || cell > kGru) return ffi::Error::InvalidArgument("jaxseq native: unknown cell");
  if (H % 8 != 0) return ffi::Error::InvalidArgument("jaxseq native: hidden size must be a multiple of 8");
  return ffi::Error::Success();
}

// glibc maps an allocation this large afresh on every call (its largest mmap
// threshold on 64-bit Linux) and unmaps it when freed. XLA's temporary buffer, which
// holds the residuals, is one such allocation in a training step at (T, B, D, H) =
// (100, 64, 128, 256) and above, so each call's first writes to it page-faulted
// 4 KiB at a time: ~14 ms of a 54 ms LSTM train step there (README, "Speed").
constexpr size_t kFreshlyMappedBytes = size_t{32} << 20;

// Asks Linux for 2 MiB pages (transparent huge pages, "madvise" or "always") where
// [p, p + bytes) covers them: the kernel's threads then fault the outputs in 2 MiB
// at a time as they write, one fault where there were 512. The advice does not
// change the memory's contents. Mapping them ahead in one call as well
// (MADV_POPULATE_WRITE) gained nothing more, and about one call in six then spent
// 50-430 ms in it at (50, 256, 256, 512), twice the train step's median.
void advise_huge_pages(void* p, size_t bytes) {
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t a = (begin + kHuge - 1) & ~(kHuge - 1), e = (begin + bytes) & ~(kHuge - 1);
  if (e > a) madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> w_x, ffi::Buffer<ffi::F32> b,
                       ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> b_hn,
                       ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                       ffi::Buffer<ffi::PRED> valid, int64_t cell, int64_t reverse, int64_t threads,
                       int64_t masked, int64_t wide, int64_t xh_t,
                       ffi::ResultBuffer<ffi::F32> ys,
                       ffi::ResultBuffer<ffi::F32> hT, ffi::ResultBuffer<ffi::F32> cT,
                       ffi::ResultBuffer<ffi::F32> acts, ffi::ResultBuffer<ffi::F32> hprev,
                       ffi::ResultBuffer<ffi::F32> extra) {
  auto xd = xs.dimensions();
  if (xd.size() != 3) return ffi::Error::InvalidArgument("jaxseq native: xs must be [T, B, D]");
  Shapes s{static_cast<int>(xd[0]), static_cast<int>(xd[1]), static_cast<int>(xd[2]),
           static_cast<int>(h0.dimensions()[1])};
  if (auto e = check_cell(cell, s.H); e.failure()) return e;
  const bool save = acts->element_count() > 0;
  Forward f{static_cast<int>(cell), reverse != 0, s, xs.typed_data(), w_x.typed_data(),
            b.typed_data(), w_h.typed_data(), b_hn.typed_data(), h0.typed_data(),
            c0.typed_data(), masked ? valid.typed_data() : nullptr, ys->typed_data(),
            hT->typed_data(), cT->typed_data(), save ? acts->typed_data() : nullptr,
            save ? hprev->typed_data() : nullptr,
            save && cell != kElman ? extra->typed_data() : nullptr};
  if (auto e = check_wide(wide); e.failure()) return e;
  f.wide = wide != 0;
  f.xh_t = xh_t != 0;
  const int64_t rows = int64_t{s.T} * s.B;
  if (save && hprev->element_count() != (f.xh_t ? (s.D + s.H) * rows : rows * s.H))
    return ffi::Error::InvalidArgument("jaxseq native: hprev has the wrong size for xh_t");
  if (save) {  // a training step's forward pass: its outputs lie in XLA's temporary buffer
    const std::pair<void*, size_t> outs[] = {{f.ys, ys->size_bytes()},
                                             {f.acts, acts->size_bytes()},
                                             {f.hprev, hprev->size_bytes()},
                                             {f.extra, f.extra ? extra->size_bytes() : 0}};
    size_t total = 0;
    for (const auto& out : outs) total += out.second;
    if (total >= kFreshlyMappedBytes)
      for (const auto& out : outs)
        if (out.second > 0) advise_huge_pages(out.first, out.second);
  }
  if (cell != kLstm) std::memset(f.cT, 0, cT->size_bytes());
  if (s.T == 0) {
    std::memcpy(f.hT, f.h0, hT->size_bytes());
    if (cell == kLstm) std::memcpy(f.cT, f.c0, cT->size_bytes());
    return ffi::Error::Success();
  }
  bool shared = false;
  const auto parts = partition(s.B, s.H, static_cast<int>(threads), shared);
  const Scratch h_buf(2 * static_cast<size_t>(s.B) * s.H);
  run_threads(parts, shared, [&](const Part& part, Barrier& barrier, bool& sense) {
    forward_thread(f, part, h_buf.data(), barrier, sense);
  });
  return ffi::Error::Success();
}

ffi::Error BackwardImpl(ffi::Buffer<ffi::F32> w_h, ffi::Buffer<ffi::F32> acts,
                        ffi::Buffer<ffi::F32> hprev, ffi::Buffer<ffi::F32> extra,
                        ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> dys,
                        ffi::Buffer<ffi::F32> dhT, ffi::Buffer<ffi::F32> dcT,
                        ffi::Buffer<ffi::F32> xs, int64_t cell, int64_t reverse, int64_t threads,
                        int64_t masked, int64_t chunk_rows, int64_t wide, int64_t prefetch,
                        ffi::ResultBuffer<ffi::F32> dzx,
                        ffi::ResultBuffer<ffi::F32> dzh, ffi::ResultBuffer<ffi::F32> dh0,
                        ffi::ResultBuffer<ffi::F32> dc0, ffi::ResultBuffer<ffi::F32> dw_x,
                        ffi::ResultBuffer<ffi::F32> dw_h, ffi::ResultBuffer<ffi::F32> db,
                        ffi::ResultBuffer<ffi::F32> db_hn) {
  auto yd = dys.dimensions();
  auto xd = xs.dimensions();
  if (yd.size() != 3) return ffi::Error::InvalidArgument("jaxseq native: dys must be [T, B, H]");
  if (xd.size() != 3) return ffi::Error::InvalidArgument("jaxseq native: xs must be [T, B, D]");
  Shapes s{static_cast<int>(yd[0]), static_cast<int>(yd[1]), static_cast<int>(xd[2]),
           static_cast<int>(yd[2])};
  if (auto e = check_cell(cell, s.H); e.failure()) return e;
  Backward f{static_cast<int>(cell), reverse != 0, s, xs.typed_data(), w_h.typed_data(),
             acts.typed_data(), hprev.typed_data(), extra.typed_data(), dys.typed_data(),
             dhT.typed_data(), dcT.typed_data(), masked ? valid.typed_data() : nullptr,
             dzx->typed_data(), cell == kGru ? dzh->typed_data() : nullptr, dh0->typed_data(),
             dc0->typed_data(), static_cast<int>(chunk_rows)};
  if (auto e = check_wide(wide); e.failure()) return e;
  f.wide = wide != 0;
  f.prefetch = prefetch != 0;
  // the weight and bias gradients, or (all of them empty) none, left to XLA
  const bool grads = dw_h->element_count() > 0;
  const int64_t K = int64_t{num_gates(static_cast<int>(cell))} * s.H;
  if (grads && (dw_x->element_count() != s.D * K || dw_h->element_count() != s.H * K ||
                db->element_count() != K || db_hn->element_count() != (cell == kGru ? s.H : 0)))
    return ffi::Error::InvalidArgument("jaxseq native: weight gradient outputs of the wrong size");
  const Grads out = grads ? Grads{dw_x->typed_data(), dw_h->typed_data(), db->typed_data(),
                                  db_hn->typed_data()}
                          : Grads{nullptr, nullptr, nullptr, nullptr};
  const size_t sizes[] = {dw_x->element_count(), dw_h->element_count(), db->element_count(),
                          db_hn->element_count()};
  float* const outs[] = {out.dw_x, out.dw_h, out.db, out.db_hn};
  for (int i = 0; i < 4; ++i)
    if (sizes[i] > 0) std::memset(outs[i], 0, sizes[i] * sizeof(float));
  if (cell != kLstm) std::memset(f.dc0, 0, dc0->size_bytes());
  if (s.T == 0) {
    std::memcpy(f.dh0, f.dhT, dh0->size_bytes());
    if (cell == kLstm) std::memcpy(f.dc0, f.dcT, dc0->size_bytes());
    return ffi::Error::Success();
  }
  bool shared = false;
  const auto parts = partition(s.B, s.H, static_cast<int>(threads), shared);
  // Threads that split the units write disjoint columns of the gradients; threads
  // that split the batch each sum all of them (the first into `out`, the others
  // into scratch added to it at the end).
  const size_t total = sizes[0] + sizes[1] + sizes[2] + sizes[3];
  const size_t extra_parts = shared || !grads ? 0 : parts.size() - 1;
  const Scratch sums(extra_parts * total);
  if (extra_parts > 0) std::memset(sums.data(), 0, extra_parts * total * sizeof(float));
  auto grads_of = [&](size_t k) {
    if (k == 0 || shared || !grads) return out;
    float* p = sums.data() + (k - 1) * total;
    return Grads{p, p + sizes[0], p + sizes[0] + sizes[1], p + sizes[0] + sizes[1] + sizes[2]};
  };
  run_threads(parts, shared, [&](const Part& part, Barrier& barrier, bool& sense) {
    backward_thread(f, part, grads_of(&part - parts.data()), barrier, sense);
  });
  for (size_t k = 1; k <= extra_parts; ++k) {
    const Grads g = grads_of(k);
    const float* const ins[] = {g.dw_x, g.dw_h, g.db, g.db_hn};
    for (int i = 0; i < 4; ++i)
      for (size_t e = 0; e < sizes[i]; ++e) outs[i][e] += ins[i][e];
  }
  return ffi::Error::Success();
}

// ------------------------------------------------------------ peak FMA rate

// kAcc independent accumulators, each a = a x + y per round: enough to keep both
// FMA pipes busy through their latency, in registers only (no loads or stores), so
// that timing `rounds` of them measures the CPU's float32 FMA rate: the ceiling of
// any product here, the micro-kernels' included.
constexpr int kAcc = 12;

template <class V>
JAXSEQ_INLINE float fma_rounds(int64_t rounds) {
  typename V::T acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = V::set1(1.0f + i * 1e-3f);
  const typename V::T x = V::set1(0.9999999f), y = V::set1(1e-7f);  // a stays near 1
  for (int64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 12
    for (int i = 0; i < kAcc; ++i) acc[i] = V::fmadd(acc[i], x, y);
  }
  float out[V::kLanes], sum = 0.0f;
  for (int i = 0; i < kAcc; ++i) {
    V::store(out, acc[i]);
    sum += out[0];
  }
  return sum;
}

JAXSEQ_AVX512 __attribute__((flatten)) float fma_rounds16(int64_t rounds) {
  return fma_rounds<V16>(rounds);
}

}  // namespace

// Runs `rounds` rounds of kAcc vector FMAs (16 lanes where `wide`, else 8) on each of
// `threads` threads at once (the kernels' own, as run_threads places them) and returns
// the float32 FLOPs done (0 for bad arguments).
extern "C" double jaxseq_native_fma_probe(int threads, int wide, int64_t rounds) {
  if (threads < 1 || rounds < 1) return 0.0;
  const std::vector<Part> parts(threads, Part{0, 0, 0, 0});  // (no rows or units: unused)
  std::vector<float> sums(threads);
  run_threads(parts, false, [&](const Part& part, Barrier&, bool&) {
    sums[&part - parts.data()] = wide ? fma_rounds16(rounds) : fma_rounds<V8>(rounds);
  });
  volatile float sink = 0.0f;  // the loops' results are used: they are not optimised away
  for (float v : sums) sink = sink + v;
  return 2.0 * threads * kAcc * (wide ? 16 : 8) * static_cast<double>(rounds);
}

// 0: neither kernel can run here; 1: the AVX2/FMA one; 2: the AVX-512 one as well.
extern "C" int jaxseq_native_supported() {
  __builtin_cpu_init();
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return 0;
  return __builtin_cpu_supports("avx512f") ? 2 : 1;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxseqRnnForward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Attr<int64_t>("cell")
                                  .Attr<int64_t>("reverse")
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("masked")
                                  .Attr<int64_t>("wide")
                                  .Attr<int64_t>("xh_t")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxseqRnnBackward, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("cell")
                                  .Attr<int64_t>("reverse")
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("masked")
                                  .Attr<int64_t>("chunk_rows")
                                  .Attr<int64_t>("wide")
                                  .Attr<int64_t>("prefetch")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
