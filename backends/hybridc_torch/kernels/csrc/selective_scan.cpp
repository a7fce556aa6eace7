// Fused CPU selective scan (Mamba-1 S6 recurrence), forward and backward; plus the diagonal linear recurrence
// (RG-LRU) scan at the end of the file.
//
// Plain C++ (no torch headers, so it compiles in about a second), loaded through ctypes by
// selective_scan_cpu.py, which owns the layouts, the allocation and the autograd wiring.
//
// Work split: one task per (batch, group, channel block); each task walks its channels one after the other and,
// per channel, the whole sequence with the [N] state in registers/L1 (never materialising [B, D, L, N]).
// Tasks are pulled from an atomic counter by `nthreads` std::threads (no OpenMP runtime, so no second thread
// pool next to torch's). The forward stores the state every K steps when a backward will follow; the backward
// walks chunks of K steps in reverse, recomputing the chunk's states and decays from its checkpoint into a
// small buffer, then runs the reverse (adjoint) recurrence. B/C gradients are shared by the channels of a group:
// each task accumulates into its own [L, N] slot (summed over slots by the caller), so there are no races and
// results are deterministic.
//
// The kernel computes out_t = C_t . h_t + D u_t from the discretised step dt (softplus, bias and the silu(z) gate are
// cheap [B, D, L] elementwise work left to torch, vectorised there, and differentiated by autograd).
//
// Layouts (all contiguous, scalar_t = float or double):
//   u, dt, out, du, ddt, dout             : [Bt, D, L]
//   A, dA_part[b]                         : [D, N]          (dA_part: [Bt, D, N], summed over b by the caller)
//   Bm, Cm                                : [Bt, G, L, N]
//   dB_part, dC_part                      : [Bt, G, S, L, N] (S channel blocks per group)
//   Dv : [D]; dD_part : [Bt, D]; h0, last, dlast, dh0 : [Bt, D, N]; ckpt : [Bt, D, nK, N]
// Optional pointers are null when absent.

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// exp for float: Cody-Waite reduction x = k ln2 + r, degree-6 polynomial, scale by 2^k through the exponent bits.
// Branch-free so the loop over the state dimension vectorises; relative error ~2e-7 on the clamped range.
static inline __attribute__((always_inline)) float fast_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    // round to nearest through the 1.5 * 2^23 shifter (vectorises; std::floor becomes a libm call without SSE4.1)
    const float kf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = (x - kf * 0.693359375f) + kf * 2.12194440e-4f;
    float p = 1.3888889e-3f;
    p = p * r + 8.3333333e-3f;
    p = p * r + 4.1666667e-2f;
    p = p * r + 1.6666667e-1f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;
    return p * __builtin_bit_cast(float, bits);  // (memcpy here blocks vectorisation in some instantiations)
}
static inline __attribute__((always_inline)) double fast_exp(double x) { return std::exp(x); }

template <typename T> struct Args {
    const T *u, *dt, *A, *Bm, *Cm, *Dv, *h0;
    T *out, *last, *ckpt;
    // backward
    const T *dout, *dlast;
    T *du, *ddt, *dA_part, *dB_part, *dC_part, *dD_part, *dh0;
    int64_t Bt, D, L, N, G, S, K;
};

template <typename F> static void run_tasks(int64_t ntasks, int nthreads, F fn) {
    if (nthreads <= 1 || ntasks <= 1) {
        for (int64_t i = 0; i < ntasks; ++i) fn(i);
        return;
    }
    std::atomic<int64_t> next(0);
    auto worker = [&]() {
        for (int64_t i = next.fetch_add(1); i < ntasks; i = next.fetch_add(1)) fn(i);
    };
    const int extra = static_cast<int>(std::min<int64_t>(nthreads, ntasks)) - 1;
    std::vector<std::thread> pool;
    pool.reserve(extra);
    for (int i = 0; i < extra; ++i) pool.emplace_back(worker);
    worker();
    for (auto &t : pool) t.join();
}

// channels [d0, d1) of batch b (all in group g)
// NFIX > 0: the state size as a compile-time constant (fully unrolled inner loop); 0: runtime a.N.
template <typename T, int NFIX>
static void fwd_channels(const Args<T> &a, int64_t b, int64_t g, int64_t d0, int64_t d1) {
    const int64_t L = a.L, N = NFIX > 0 ? NFIX : a.N, nK = (L + a.K - 1) / a.K;
    std::vector<T> hv(N);
    T *__restrict h = hv.data();
    const T *Bp = a.Bm + (b * a.G + g) * L * N, *Cp = a.Cm + (b * a.G + g) * L * N;
    for (int64_t d = d0; d < d1; ++d) {
        const int64_t row = b * a.D + d;
        const T *u = a.u + row * L, *dt_in = a.dt + row * L;
        const T *__restrict Ad = a.A + d * N;
        const T Dd = a.Dv ? a.Dv[d] : T(0);
        if (a.h0) std::memcpy(h, a.h0 + row * N, N * sizeof(T));
        else std::memset(h, 0, N * sizeof(T));
        T *out = a.out + row * L;
        T *ck = a.ckpt ? a.ckpt + row * nK * N : nullptr;
        for (int64_t t = 0; t < L; ++t) {
            if (ck && t % a.K == 0) std::memcpy(ck + (t / a.K) * N, h, N * sizeof(T));
            const T dt = dt_in[t];
            const T dtu = dt * u[t];
            const T *__restrict Bt_ = Bp + t * N;
            const T *__restrict Ct_ = Cp + t * N;
            T y = 0;
#pragma omp simd reduction(+ : y)
            for (int64_t n = 0; n < N; ++n) {
                const T hn = fast_exp(dt * Ad[n]) * h[n] + dtu * Bt_[n];
                h[n] = hn;
                y += Ct_[n] * hn;
            }
            out[t] = y + Dd * u[t];
        }
        std::memcpy(a.last + row * N, h, N * sizeof(T));
    }
}

template <typename T, int NFIX>
static void bwd_channels(const Args<T> &a, int64_t b, int64_t g, int64_t s, int64_t d0, int64_t d1) {
    const int64_t L = a.L, N = NFIX > 0 ? NFIX : a.N, K = a.K, nK = (L + K - 1) / K;
    std::vector<T> buf((K + 1) * N + K * N + K + 2 * N);
    T *hbuf = buf.data();              // [K+1, N]: state before step j of the chunk (row K: after the chunk)
    T *dAbuf = hbuf + (K + 1) * N;     // [K, N]: exp(dt A) per step
    T *dtbuf = dAbuf + K * N;          // [K]
    T *__restrict dh = dtbuf + K;      // [N]: adjoint of the state
    T *__restrict dAacc = dh + N;      // [N]
    const T *Bp = a.Bm + (b * a.G + g) * L * N, *Cp = a.Cm + (b * a.G + g) * L * N;
    T *dBp = a.dB_part + ((b * a.G + g) * a.S + s) * L * N;
    T *dCp = a.dC_part + ((b * a.G + g) * a.S + s) * L * N;
    for (int64_t d = d0; d < d1; ++d) {
        const int64_t row = b * a.D + d;
        const T *u = a.u + row * L, *dt_in = a.dt + row * L, *dout = a.dout + row * L;
        const T *__restrict Ad = a.A + d * N;
        const T Dd = a.Dv ? a.Dv[d] : T(0);
        T *du = a.du + row * L, *ddt = a.ddt + row * L;
        if (a.dlast) std::memcpy(dh, a.dlast + row * N, N * sizeof(T));
        else std::memset(dh, 0, N * sizeof(T));
        std::memset(dAacc, 0, N * sizeof(T));
        T dDacc = 0;
        for (int64_t k = nK - 1; k >= 0; --k) {
            const int64_t t0 = k * K, len = std::min(K, L - t0);
            std::memcpy(hbuf, a.ckpt + (row * nK + k) * N, N * sizeof(T));
            for (int64_t j = 0; j < len; ++j) {  // recompute the chunk's states
                const int64_t t = t0 + j;
                const T dt = dt_in[t];
                const T dtu = dt * u[t];
                const T *__restrict Bt_ = Bp + t * N;
                const T *__restrict Ct_ = Cp + t * N;
                const T *__restrict hp = hbuf + j * N;
                T *__restrict hn = hbuf + (j + 1) * N;
                T *__restrict dA = dAbuf + j * N;
                (void)Ct_;
#pragma omp simd
                for (int64_t n = 0; n < N; ++n) {
                    const T e = fast_exp(dt * Ad[n]);
                    dA[n] = e;
                    hn[n] = e * hp[n] + dtu * Bt_[n];
                }
                dtbuf[j] = dt;
            }
            for (int64_t j = len - 1; j >= 0; --j) {  // adjoint recurrence, newest step first
                const int64_t t = t0 + j;
                const T dt = dtbuf[j], ut = u[t], dtu = dt * ut;
                const T dy = dout[t];
                dDacc += dy * ut;
                const T *__restrict Bt_ = Bp + t * N;
                const T *__restrict Ct_ = Cp + t * N;
                const T *__restrict hp = hbuf + j * N;
                const T *__restrict hn = hbuf + (j + 1) * N;
                const T *__restrict dA = dAbuf + j * N;
                T *__restrict dBt = dBp + t * N;
                T *__restrict dCt = dCp + t * N;
                T sum_dhB = 0, sum_dlog = 0;
#pragma omp simd reduction(+ : sum_dhB, sum_dlog)
                for (int64_t n = 0; n < N; ++n) {
                    const T dhn = dh[n] + dy * Ct_[n];  // d loss / d h_t
                    dCt[n] += dy * hn[n];
                    dBt[n] += dhn * dtu;
                    sum_dhB += dhn * Bt_[n];
                    const T gl = dhn * hp[n] * dA[n];  // d loss / d (dt A_n)
                    sum_dlog += gl * Ad[n];
                    dAacc[n] += gl * dt;
                    dh[n] = dhn * dA[n];  // d loss / d h_{t-1}
                }
                du[t] = dy * Dd + dt * sum_dhB;
                ddt[t] = ut * sum_dhB + sum_dlog;
            }
        }
        std::memcpy(a.dh0 + row * N, dh, N * sizeof(T));
        std::memcpy(a.dA_part + row * N, dAacc, N * sizeof(T));
        a.dD_part[row] = dDacc;
    }
}

// tasks: (b, g, s) with channel block s of group g
template <typename T> static void split(const Args<T> &a, int64_t task, int64_t &b, int64_t &g, int64_t &s,
                                        int64_t &d0, int64_t &d1) {
    s = task % a.S;
    g = (task / a.S) % a.G;
    b = task / (a.S * a.G);
    const int64_t Dg = a.D / a.G;
    d0 = g * Dg + (Dg * s) / a.S;
    d1 = g * Dg + (Dg * (s + 1)) / a.S;
}

template <typename T> static void forward(const Args<T> &a, int nthreads) {
    run_tasks(a.Bt * a.G * a.S, nthreads, [&](int64_t task) {
        int64_t b, g, s, d0, d1;
        split(a, task, b, g, s, d0, d1);
        if (a.N == 16) fwd_channels<T, 16>(a, b, g, d0, d1);  // Mamba-1's usual state size
        else fwd_channels<T, 0>(a, b, g, d0, d1);
    });
}

template <typename T> static void backward(const Args<T> &a, int nthreads) {
    run_tasks(a.Bt * a.G * a.S, nthreads, [&](int64_t task) {
        int64_t b, g, s, d0, d1;
        split(a, task, b, g, s, d0, d1);
        if (a.N == 16) bwd_channels<T, 16>(a, b, g, s, d0, d1);
        else bwd_channels<T, 0>(a, b, g, s, d0, d1);
    });
}

template <typename T>
static Args<T> make(const void *u, const void *dt, const void *A, const void *Bm, const void *Cm, const void *Dv,
                    int64_t Bt, int64_t D, int64_t L, int64_t N, int64_t G, int64_t S, int64_t K) {
    Args<T> a{};
    a.u = (const T *)u; a.dt = (const T *)dt; a.A = (const T *)A; a.Bm = (const T *)Bm; a.Cm = (const T *)Cm;
    a.Dv = (const T *)Dv;
    a.Bt = Bt; a.D = D; a.L = L; a.N = N; a.G = G; a.S = S; a.K = K;
    return a;
}

// ------------------------------------------------------------------------------------------------------------
// Diagonal linear recurrence h_t = a_t h_{t-1} + x_t (RG-LRU), layouts a, x, h, dh, da, dx : [Bt, L, W]; h0, dh0 :
// [Bt, W]. One task per (batch, block of channels); the inner loop runs over contiguous channels (vectorised),
// the outer over time, the block's state staying in registers/L1. Memory-bound: one read of a and x, one write.
// No FMA contraction here: a * h + x rounded twice, exactly as the torch reference and the decode step compute it,
// so this scan is bitwise equal to the sequential reference (memory-bound: FMA would buy nothing).
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

int hybridc_ss_abi_version() { return 3; }

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

// dtype: 0 = float32, 1 = float64. Dv and h0 may be null; ckpt may be null (no backward will follow).
void hybridc_ss_forward(int dtype, int nthreads, const void *u, const void *dt, const void *A, const void *Bm,
                        const void *Cm, const void *Dv, const void *h0, void *out, void *last, void *ckpt,
                        int64_t Bt, int64_t D, int64_t L, int64_t N, int64_t G, int64_t S, int64_t K) {
#define HYBRIDC_SS_FWD(T)                                                                                  \
    {                                                                                                      \
        auto a = make<T>(u, dt, A, Bm, Cm, Dv, Bt, D, L, N, G, S, K);                                      \
        a.h0 = (const T *)h0; a.out = (T *)out; a.last = (T *)last; a.ckpt = (T *)ckpt;                    \
        forward(a, nthreads);                                                                              \
    }
    if (dtype == 0) HYBRIDC_SS_FWD(float) else HYBRIDC_SS_FWD(double)
#undef HYBRIDC_SS_FWD
}

// dB_part / dC_part must be zero-filled by the caller; dlast may be null.
void hybridc_ss_backward(int dtype, int nthreads, const void *u, const void *dt, const void *A, const void *Bm,
                         const void *Cm, const void *Dv, const void *ckpt, const void *dout, const void *dlast,
                         void *du, void *ddt, void *dA_part, void *dB_part, void *dC_part, void *dD_part, void *dh0,
                         int64_t Bt, int64_t D, int64_t L, int64_t N, int64_t G, int64_t S, int64_t K) {
#define HYBRIDC_SS_BWD(T)                                                                                  \
    {                                                                                                      \
        auto a = make<T>(u, dt, A, Bm, Cm, Dv, Bt, D, L, N, G, S, K);                                      \
        a.ckpt = (T *)ckpt; a.dout = (const T *)dout; a.dlast = (const T *)dlast;                          \
        a.du = (T *)du; a.ddt = (T *)ddt; a.dA_part = (T *)dA_part;                                     \
        a.dB_part = (T *)dB_part; a.dC_part = (T *)dC_part; a.dD_part = (T *)dD_part; a.dh0 = (T *)dh0;    \
        backward(a, nthreads);                                                                             \
    }
    if (dtype == 0) HYBRIDC_SS_BWD(float) else HYBRIDC_SS_BWD(double)
#undef HYBRIDC_SS_BWD
}

}  // extern "C"
