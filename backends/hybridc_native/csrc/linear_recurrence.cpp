// Diagonal linear recurrence h_t = a_t h_{t-1} + x_t (the scan inside Griffin's RG-LRU), forward and reverse
// (adjoint) scan. Paper: De et al., "Griffin: Mixing Gated Linear Recurrences with Local Attention for Efficient
// Language Models" (2024, arXiv:2402.19427), Sec. 2.4. Reference implementation: google-deepmind/recurrentgemma's
// rnn_scan.
//
// Layouts a, x, h, dh, da, dx : [Bt, L, W]; h0, dh0 : [Bt, W] (all contiguous, float or double).
// One task per (batch, block of channels); the inner loop runs over contiguous channels (vectorised),
// the outer over time, the block's state staying in registers/L1. Memory-bound: one read of a and x, one write.
// No FMA contraction here: a * h + x rounded twice, exactly as the torch reference and the decode step compute it,
// so this scan is bitwise equal to the sequential reference (memory-bound: FMA would buy nothing).

#include <algorithm>
#include <cstdint>

#include "vec_math.h"

namespace {

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
constexpr int64_t LR_BLOCK = 64;

template <typename T>
static void lr_forward(const T *a, const T *x, const T *h0, T *h, int64_t Bt, int64_t L, int64_t W, int nthreads) {
    const int64_t nblk = (W + LR_BLOCK - 1) / LR_BLOCK;
    run_tasks(Bt * nblk, nthreads, [&](int64_t task) {
        const int64_t b = task / nblk, w0 = (task % nblk) * LR_BLOCK, nw = std::min(LR_BLOCK, W - w0);
        T state[LR_BLOCK];
        for (int64_t w = 0; w < nw; ++w) state[w] = h0 ? h0[b * W + w0 + w] : T(0);
        for (int64_t t = 0; t < L; ++t) {
            const int64_t off = (b * L + t) * W + w0;
            const T *__restrict at = a + off;
            const T *__restrict xt = x + off;
            T *__restrict ht = h + off;
#pragma omp simd
            for (int64_t w = 0; w < nw; ++w) {
                state[w] = at[w] * state[w] + xt[w];
                ht[w] = state[w];
            }
        }
    });
}

// Reverse (adjoint) scan: g_t = dh_t + a_{t+1} g_{t+1}; dx_t = g_t; da_t = g_t h_{t-1} (h_{-1} = h0); dh0 = a_0 g_0.
template <typename T>
static void lr_backward(const T *a, const T *h, const T *h0, const T *dh, T *da, T *dx, T *dh0, int64_t Bt,
                        int64_t L, int64_t W, int nthreads) {
    const int64_t nblk = (W + LR_BLOCK - 1) / LR_BLOCK;
    run_tasks(Bt * nblk, nthreads, [&](int64_t task) {
        const int64_t b = task / nblk, w0 = (task % nblk) * LR_BLOCK, nw = std::min(LR_BLOCK, W - w0);
        T carry[LR_BLOCK];
        for (int64_t w = 0; w < nw; ++w) carry[w] = T(0);
        for (int64_t t = L - 1; t >= 0; --t) {
            const int64_t off = (b * L + t) * W + w0;
            const T *__restrict at = a + off;
            const T *__restrict dht = dh + off;
            const T *__restrict hp = t > 0 ? h + off - W : (h0 ? h0 + b * W + w0 : nullptr);
            T *__restrict dxt = dx + off;
            T *__restrict dat = da + off;
            if (hp) {
#pragma omp simd
                for (int64_t w = 0; w < nw; ++w) {
                    const T g = dht[w] + carry[w];
                    dxt[w] = g;
                    dat[w] = g * hp[w];
                    carry[w] = g * at[w];
                }
            } else {
#pragma omp simd
                for (int64_t w = 0; w < nw; ++w) {
                    const T g = dht[w] + carry[w];
                    dxt[w] = g;
                    dat[w] = T(0);
                    carry[w] = g * at[w];
                }
            }
        }
        if (dh0)
            for (int64_t w = 0; w < nw; ++w) dh0[b * W + w0 + w] = carry[w];
    });
}

#pragma GCC pop_options

}  // namespace

extern "C" {

// dtype: 0 = float32, 1 = float64; h0 may be null.
void hybridc_lr_forward(int dtype, int nthreads, const void *a, const void *x, const void *h0, void *h, int64_t Bt,
                        int64_t L, int64_t W) {
    if (dtype == 0) lr_forward((const float *)a, (const float *)x, (const float *)h0, (float *)h, Bt, L, W, nthreads);
    else lr_forward((const double *)a, (const double *)x, (const double *)h0, (double *)h, Bt, L, W, nthreads);
}

// h0 and dh0 may be null (no initial state).
void hybridc_lr_backward(int dtype, int nthreads, const void *a, const void *h, const void *h0, const void *dh,
                         void *da, void *dx, void *dh0, int64_t Bt, int64_t L, int64_t W) {
    if (dtype == 0)
        lr_backward((const float *)a, (const float *)h, (const float *)h0, (const float *)dh, (float *)da, (float *)dx,
                    (float *)dh0, Bt, L, W, nthreads);
    else
        lr_backward((const double *)a, (const double *)h, (const double *)h0, (const double *)dh, (double *)da,
                    (double *)dx, (double *)dh0, Bt, L, W, nthreads);
}

}  // extern "C"
