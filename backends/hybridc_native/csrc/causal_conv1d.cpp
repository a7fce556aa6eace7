// Fused causal depthwise conv1d + bias + optional silu over time, forward and backward, time-major (the Mamba-2
// layer's xBC channels, read in place from its input projection's output):
//     u_t[c] = bias[c] + sum_{j<K} w[c, j] x_{t-K+1+j}[c]      (x_{-K+1} .. x_{-1} from the conv state h0, else 0)
//     y_t[c] = silu(u_t[c])  (or u_t[c])
// Reference: mamba_ssm's causal_conv1d_fn (Dao-AILab/causal-conv1d) with activation="silu"; our oracle is
// hybridc_torch's ops/causal_conv1d/naive.py (F.conv1d on the channel-major layout).
//
// Why: the torch path transposes the projection's slice to channel-major, concatenates the state in front (a copy),
// runs F.conv1d, then silu (another pass) and its backward (three more passes and a cat). Here the forward reads x
// where it lies and writes y in the [Bt, L, C] layout the SSD kernel reads, in one pass; the backward is one pass too.
//
// Work split: one task per (batch row, span of CONV_ROWS steps); a task takes its steps in order and each row's
// channels in vectors of W lanes (memory order: the rows sit a page or more apart in the layer's projection, and a
// walk down one chunk of channels was latency-bound). The K-1 rows before t = 0 come from the state (transposed into
// a small buffer). Measured at the Mamba-2 layer's shape ([4, 1024, 640] in a [4, 1024, 1160] projection, 1 thread):
// forward ~2.7 ms, backward ~5.3 ms (a copy of the whole projection: ~1.5 ms; the forward is memory-bound).
//
// Backward: per task, sweep 1 recomputes u_s (for silu's derivative) on rows s = t0 .. t1 + K - 2 and keeps
// du_s = dy_s silu'(u_s) in a buffer, summing dw[j] += du_s x_{s-K+1+j} and dbias += du_s over the task's own rows;
// sweep 2 gathers dx_t = sum_j w[j] du_{t+K-1-j} (du past L is 0), and, in the first task, the state's gradient for
// t = -K+1 .. -1. Each task writes its own dx rows and its own dw_part slot: no races, and the result does not
// depend on the thread count.
//
// Layouts (scalar_t = float or double): x [Bt, L, C] with element strides (sxb, sxt, 1); dx likewise (sdxb, sdxt, 1)
// (the layer may point it into its projection's gradient); y, dy [Bt, L, C] contiguous; w [C, K]; bias [C];
// h0, dh0 [Bt, C, K-1]; dw_part [T, K + 1, C] (T tasks: dw transposed, then dbias; summed by the caller). bias, h0,
// dh0 may be null. K from 1 to HYBRIDC_CONV_KMAX.

#include <cstdint>
#include <cstring>
#include <vector>

#include "vec_math.h"

#define HYBRIDC_CONV_KMAX 8
#define CONV_ROWS 64  // steps per task

namespace {

template <typename T> struct ConvArgs {
    const T *x, *bias, *h0, *dy;
    const T *wt;  // [K, Cp] transposed, zero-padded weights (Cp = C rounded up to the vector width)
    const T *bp;  // [Cp] zero-padded bias (zeros without one)
    T *y, *dx, *dw_part, *dh0;
    int64_t Bt, L, C, Cp, sxb, sxt, sdxb, sdxt;
    bool silu;
};

// n <= W lanes of p (the rest 0) / into p
template <class V, typename T> static inline __attribute__((always_inline)) V load_n(const T *p, int n) {
    if (n == Vec<T>::W) return vload<V>(p);
    V v = {};
    std::memcpy(&v, p, sizeof(T) * n);
    return v;
}
template <class V, typename T> static inline __attribute__((always_inline)) void store_n(T *p, V v, int n) {
    if (n == Vec<T>::W) return vstore(p, v);
    std::memcpy(p, &v, sizeof(T) * n);
}


// the K-1 rows before t = 0, time-major [K-1, Cp]: the conv state h0 of batch b transposed, or zeros
template <typename T> static std::vector<T> conv_prefix(const ConvArgs<T> &a, int64_t b, int64_t K) {
    std::vector<T> pre((K > 1 ? K - 1 : 0) * a.Cp + Vec<T>::W, T(0));
    if (a.h0)
        for (int64_t c = 0; c < a.C; ++c)
            for (int64_t j = 0; j < K - 1; ++j) pre[j * a.Cp + c] = a.h0[(b * a.C + c) * (K - 1) + j];
    return pre;
}

// one task: batch row b, steps t0 .. t1, every channel of a row in turn (rows are read in memory order)
template <typename T, int K> static void conv_fwd_task(const ConvArgs<T> &a, int64_t b, int64_t t0, int64_t t1) {
    using V = typename Vec<T>::V;
    constexpr int W = Vec<T>::W;
    std::vector<T> pre;
    if (t0 < K - 1) pre = conv_prefix(a, b, K);
    const int64_t nfull = a.C / W, tail = a.C - nfull * W;
    for (int64_t t = t0; t < t1; ++t) {
        const T *row[K];
        for (int j = 0; j < K; ++j) {
            const int64_t s = t - K + 1 + j;
            row[j] = s >= 0 ? a.x + b * a.sxb + s * a.sxt : pre.data() + (s + K - 1) * a.Cp;
        }
        T *yt = a.y + (b * a.L + t) * a.C;
        for (int64_t c = 0; c < nfull * W; c += W) {
            V u = vload<V>(a.bp + c);
#pragma GCC unroll 8
            for (int j = 0; j < K; ++j) u += vload<V>(a.wt + j * a.Cp + c) * vload<V>(row[j] + c);
            if (a.silu) u = u * vsigmoid_rcp(u);
            vstore(yt + c, u);
        }
        if (tail) {
            const int64_t c = nfull * W;
            V u = vload<V>(a.bp + c);
            for (int j = 0; j < K; ++j) u += vload<V>(a.wt + j * a.Cp + c) * load_n<V>(row[j] + c, (int)tail);
            if (a.silu) u = u * vsigmoid_rcp(u);
            store_n(yt + c, u, (int)tail);
        }
    }
}

// one backward task: batch row b, steps t0 .. t1. Sweep 1 (rows s in t0 .. t1 + K - 1, clipped to L) recomputes
// u_s, stores du_s = dy_s silu'(u_s) in a row buffer and, for the task's own rows, accumulates dw and dbias;
// sweep 2 gathers dx_t = sum_j w_j du_{t+K-1-j} (du past L is 0) for t in t0 .. t1, and for t < 0 (the first task
// only) the state's gradient. dwb: this task's [K + 1, Cp] slot (dw rows, then dbias).
template <typename T, int K> static void conv_bwd_task(const ConvArgs<T> &a, int64_t b, int64_t t0, int64_t t1,
                                                       T *part) {
    using V = typename Vec<T>::V;
    constexpr int W = Vec<T>::W;
    std::vector<T> pre;
    if (t0 < K - 1) pre = conv_prefix(a, b, K);
    const int64_t e = std::min(a.L, t1 + K - 1), Cp = a.Cp, nv = Cp / W, tail = a.C - (nv - 1) * W;
    std::vector<T> du((t1 - t0 + K - 1) * Cp + W, T(0)), dwv((K + 1) * Cp, T(0));
    T *dwb = dwv.data();
    for (int64_t s = t0; s < e; ++s) {
        const T *row[K];
        for (int j = 0; j < K; ++j) {
            const int64_t q = s - K + 1 + j;
            row[j] = q >= 0 ? a.x + b * a.sxb + q * a.sxt : pre.data() + (q + K - 1) * Cp;
        }
        const T *dys = a.dy + (b * a.L + s) * a.C;
        T *dus = du.data() + (s - t0) * Cp;
        const bool own = s < t1;
        for (int64_t v = 0; v < nv; ++v) {
            const int64_t c = v * W;
            const int n = v + 1 < nv ? W : (int)tail;
            V xs[K];
            for (int j = 0; j < K; ++j) xs[j] = load_n<V>(row[j] + c, n);
            V d = load_n<V>(dys + c, n);
            if (a.silu) {
                V u = vload<V>(a.bp + c);
                for (int j = 0; j < K; ++j) u += vload<V>(a.wt + j * Cp + c) * xs[j];
                const V sg = vsigmoid_rcp(u);
                d = d * sg * (T(1) + u * (T(1) - sg));
            }
            vstore(dus + c, d);
            if (own) {
                for (int j = 0; j < K; ++j) vstore(dwb + j * Cp + c, vload<V>(dwb + j * Cp + c) + d * xs[j]);
                vstore(dwb + K * Cp + c, vload<V>(dwb + K * Cp + c) + d);
            }
        }
    }
    const int64_t tb = t0 == 0 ? -(K - 1) : t0;  // the first task also writes the state's K-1 rows
    for (int64_t t = tb; t < t1; ++t) {
        if (t < 0 && !a.dh0) continue;
        T *out = t >= 0 ? a.dx + b * a.sdxb + t * a.sdxt : nullptr;
        for (int64_t v = 0; v < nv; ++v) {
            const int64_t c = v * W;
            const int n = v + 1 < nv ? W : (int)tail;
            V g = V{};
            for (int j = 0; j < K; ++j) {
                const int64_t q = t + K - 1 - j;
                if (q >= t0 && q < e) g += vload<V>(a.wt + j * Cp + c) * vload<V>(du.data() + (q - t0) * Cp + c);
            }
            if (out) {
                store_n(out + c, g, n);
            } else {
                T tmp[W];
                vstore(tmp, g);
                for (int l = 0; l < n; ++l) a.dh0[(b * a.C + c + l) * (K - 1) + (t + K - 1)] = tmp[l];
            }
        }
    }
    for (int j = 0; j <= K; ++j) std::copy(dwb + j * Cp, dwb + j * Cp + a.C, part + j * a.C);
}

template <typename T, int K> static void conv_run(const ConvArgs<T> &a, int nthreads, bool backward) {
    const int64_t nt = (a.L + CONV_ROWS - 1) / CONV_ROWS;
    run_tasks(a.Bt * nt, nthreads, [&](int64_t task) {
        const int64_t b = task / nt, t0 = (task % nt) * CONV_ROWS, t1 = std::min(a.L, t0 + CONV_ROWS);
        if (backward) conv_bwd_task<T, K>(a, b, t0, t1, a.dw_part + task * (K + 1) * a.C);
        else conv_fwd_task<T, K>(a, b, t0, t1);
    });
}

template <typename T> static void conv_dispatch(ConvArgs<T> a, const T *w, int64_t K, int nthreads, bool backward) {
    constexpr int W = Vec<T>::W;
    a.Cp = (a.C + W - 1) / W * W;
    std::vector<T> wt(K * a.Cp, T(0));
    for (int64_t c = 0; c < a.C; ++c)
        for (int64_t j = 0; j < K; ++j) wt[j * a.Cp + c] = w[c * K + j];
    a.wt = wt.data();
    std::vector<T> bp(a.Cp, T(0));
    if (a.bias) std::copy(a.bias, a.bias + a.C, bp.begin());
    a.bp = bp.data();
    switch (K) {
        case 1: return conv_run<T, 1>(a, nthreads, backward);
        case 2: return conv_run<T, 2>(a, nthreads, backward);
        case 3: return conv_run<T, 3>(a, nthreads, backward);
        case 4: return conv_run<T, 4>(a, nthreads, backward);
        case 5: return conv_run<T, 5>(a, nthreads, backward);
        case 6: return conv_run<T, 6>(a, nthreads, backward);
        case 7: return conv_run<T, 7>(a, nthreads, backward);
        case 8: return conv_run<T, 8>(a, nthreads, backward);
        default: return;
    }
}

}  // namespace

extern "C" {

// the widest conv the kernels take (the callers fall back to the reference past it)
int hybridc_conv_kmax() { return HYBRIDC_CONV_KMAX; }

// steps per task: the backward's dw_part holds Bt * ceil(L / this) slots
int hybridc_conv_rows() { return CONV_ROWS; }

// dtype: 0 = float32, 1 = float64. y = silu(conv(x) + bias) (silu != 0) or conv(x) + bias; bias, h0 may be null.
void hybridc_conv_forward(int dtype, int nthreads, int silu, const void *x, const void *w, const void *bias,
                          const void *h0, void *y, int64_t Bt, int64_t L, int64_t C, int64_t K, int64_t sxb,
                          int64_t sxt) {
#define HYBRIDC_CONV_FWD(T)                                                                                   \
    {                                                                                                         \
        ConvArgs<T> a{};                                                                                      \
        a.x = (const T *)x; a.bias = (const T *)bias; a.h0 = (const T *)h0; a.y = (T *)y;                     \
        a.Bt = Bt; a.L = L; a.C = C; a.sxb = sxb; a.sxt = sxt; a.silu = silu != 0;                            \
        conv_dispatch(a, (const T *)w, K, nthreads, false);                                                   \
    }
    if (dtype == 0) HYBRIDC_CONV_FWD(float) else HYBRIDC_CONV_FWD(double)
#undef HYBRIDC_CONV_FWD
}

// dy contiguous; dx strided (sdxb, sdxt, 1); dh0 may be null (no state gradient wanted); dw_part [T, K + 1, C]
// (T = Bt ceil(L / hybridc_conv_rows()): per task, the rows of dw^T then dbias; summed over T by the caller).
void hybridc_conv_backward(int dtype, int nthreads, int silu, const void *x, const void *w, const void *bias,
                           const void *h0, const void *dy, void *dx, void *dw_part, void *dh0,
                           int64_t Bt, int64_t L, int64_t C, int64_t K, int64_t sxb, int64_t sxt, int64_t sdxb,
                           int64_t sdxt) {
#define HYBRIDC_CONV_BWD(T)                                                                                   \
    {                                                                                                         \
        ConvArgs<T> a{};                                                                                      \
        a.x = (const T *)x; a.bias = (const T *)bias; a.h0 = (const T *)h0; a.dy = (const T *)dy;             \
        a.dx = (T *)dx; a.dw_part = (T *)dw_part; a.dh0 = (T *)dh0;                                          \
        a.Bt = Bt; a.L = L; a.C = C; a.sxb = sxb; a.sxt = sxt; a.sdxb = sdxb; a.sdxt = sdxt;                  \
        a.silu = silu != 0;                                                                                   \
        conv_dispatch(a, (const T *)w, K, nthreads, true);                                                    \
    }
    if (dtype == 0) HYBRIDC_CONV_BWD(float) else HYBRIDC_CONV_BWD(double)
#undef HYBRIDC_CONV_BWD
}

}  // extern "C"
