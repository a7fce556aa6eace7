// Fused CPU selective scan (Mamba-1 S6 recurrence), forward and backward; plus the diagonal linear recurrence
// (RG-LRU) scan at the end of the file.
//
// Plain C++ (no framework headers; compiles in ~5-8 s with g++ 12, once, then cached by hybridc.native.build). torch
// loads it through ctypes (hybridc_torch/kernels/selective_scan_cpu.py); JAX includes it in xla_ffi.cpp and calls it
// as XLA custom calls (hybridc_jax/kernels/cpu_ffi.py). The callers own the layouts, allocation and autodiff wiring.
//
// Vectorisation: across CHANNELS, W of them per vector (W = 8 fp32 lanes with AVX2, 16 with AVX-512; 4/8 for fp64),
// written with GCC/Clang vector extensions, so the same code compiles for any target (SSE2-only x86 or NEON get the
// same W-lane code split into narrower instructions; the only intrinsics are two optional min/max helpers). Per time
// step and state index n, the decay exp(dt A), the state update and the C-weighted output sum are all lane-parallel
// (no horizontal sums in the forward). The [W channels, N] state lives in L1, the loop over n is unrolled for N = 16.
// u, delta, z and the outputs are [B, D, L] (channels strided by L): they are transposed into [T, W] tiles per chunk
// of T steps (loads/stores on the load-store ports, overlapping the FP work); B_t and C_t are the same for all channels
// of a group, so they are scalar broadcasts from their natural [B, G, N, L] layout.
//
// Fused elementwise work: dt = softplus(delta + bias), out = y * silu(z) and their derivatives are computed in the
// kernel ([B, D, L] work, W lanes at a time), so a forward is one pass over the inputs and one write of `out`.
// exp is a vectorised range reduction + degree-6 polynomial (max relative error 7.7e-8, ~1.3 ulp, measured against
// double exp over [-88, 88]; arguments below -88 give exactly 0; clamped at 88); softplus uses a vectorised log
// (max relative error 3e-7). fp64 uses std::exp / log1p per lane.
//
// Cost model (measured, B4 L1024 D512 N16): the forward is bound by FP-pipe throughput, ~15 FMA-pipe ops per
// (step, n, 8 channels), about 1x the time of a warm torch.exp over [B, L, D, N] (which is memory-bound); the
// backward does ~23 (recompute + adjoint) and is ~3x the forward.
//
// Work split: one task per (batch, group, block range S); tasks are pulled from an atomic counter by `nthreads`
// std::threads (no OpenMP runtime, so no second thread pool next to torch's). The forward stores the state every K
// steps when a backward will follow. The backward walks chunks of K steps in reverse; per chunk it visits the task's
// channel blocks one after the other (each block keeps its adjoint state between chunks), recomputing the chunk's
// states and decays from the checkpoint, then running the adjoint recurrence. dB and dC (shared by the channels of a
// group) are accumulated lane-wise over all blocks of the chunk and reduced across lanes once per chunk into the
// task's own [N, L] slot (summed over slots by the caller): no races, deterministic results.
//
// Layouts (all contiguous, scalar_t = float or double):
//   u, delta, z, out, dout, du, ddelta, dz : [Bt, D, L]
//   A : [D, N]          Bm, Cm : [Bt, G, N, L]          dB_part, dC_part : [Bt, G, S, N, L] (S tasks per group)
//   bias, Dv : [D]      dbias_part, dD_part : [Bt, D]   h0, last, dlast, dh0, dA_part : [Bt, D, N]
//   ckpt : [Bt, D, nK, N] (nK = ceil(L / K))
// Optional pointers are null when absent.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifndef HYBRIDC_VBYTES  // vector width in bytes (overridable with -DHYBRIDC_VBYTES=16/32/64 for tests)
#if defined(__AVX512F__)
#define HYBRIDC_VBYTES 64
#else
#define HYBRIDC_VBYTES 32
#endif
#endif

namespace {

template <typename T> struct Vec {
    static constexpr int W = HYBRIDC_VBYTES / sizeof(T);
    typedef T V __attribute__((vector_size(HYBRIDC_VBYTES)));
};
using VF = Vec<float>::V;
using VD = Vec<double>::V;
typedef uint32_t VU __attribute__((vector_size(HYBRIDC_VBYTES)));
typedef int32_t VI __attribute__((vector_size(HYBRIDC_VBYTES)));

template <class V> static inline __attribute__((always_inline)) V vload(const void *p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}
template <class V> static inline __attribute__((always_inline)) void vstore(void *p, V v) {
    std::memcpy(p, &v, sizeof(V));
}
template <class V, class T> static inline __attribute__((always_inline)) V splat(T s) {
    V v = {};
    return v + s;
}

// min/max: GCC does not turn `a < b ? b : a` on vectors into vmaxps (it emits compare + blend), so use the
// instruction where we have it. Both return b where b is NaN (x86's rule for maxps/minps), so vexp(NaN) is NaN.
static inline __attribute__((always_inline)) VF vmax(VF a, VF b) {
#if HYBRIDC_VBYTES == 32 && defined(__AVX__)
    return (VF)_mm256_max_ps((__m256)a, (__m256)b);
#elif HYBRIDC_VBYTES == 64 && defined(__AVX512F__)
    return (VF)_mm512_max_ps((__m512)a, (__m512)b);
#elif HYBRIDC_VBYTES == 16 && defined(__SSE__)
    return (VF)_mm_max_ps((__m128)a, (__m128)b);
#else
    return b < a ? a : b;
#endif
}
static inline __attribute__((always_inline)) VF vmin(VF a, VF b) {
#if HYBRIDC_VBYTES == 32 && defined(__AVX__)
    return (VF)_mm256_min_ps((__m256)a, (__m256)b);
#elif HYBRIDC_VBYTES == 64 && defined(__AVX512F__)
    return (VF)_mm512_min_ps((__m512)a, (__m512)b);
#elif HYBRIDC_VBYTES == 16 && defined(__SSE__)
    return (VF)_mm_min_ps((__m128)a, (__m128)b);
#else
    return a < b ? a : b;
#endif
}

// exp on W fp32 lanes. x = k ln2 + r with k = round(x / ln2) (through the 1.5 * 2^23 shifter, whose low mantissa
// bits then hold k), r in [-ln2/2, ln2/2] (two-constant Cody-Waite), exp(r) = 1 + r + r^2 q(r) with q of degree 4
// fitted for minimax relative error (our own Lawson-weighted fit: 3e-9 before rounding), times 2^k built in the
// exponent field. x is clamped to [-88, 88]: below -88, k = -127 and the scale is exactly +0, so very negative
// arguments (strong decays) give 0, never garbage or denormals from the scale.
static inline __attribute__((always_inline)) VF vexp(VF x) {
    x = vmin(splat<VF>(88.0f), vmax(splat<VF>(-88.0f), x));  // NaN stays NaN
    const VF shifter = splat<VF>(12582912.0f);  // 1.5 * 2^23
    const VF kr = x * 1.44269504088896341f + shifter;
    const VF k = kr - shifter;
    VF r = x - k * 0.693359375f;  // ln2 = 0.693359375 - 2.12194440e-4 (hi exact in 10 bits: k * hi is exact)
    r = r + k * 2.12194440e-4f;
    VF p = splat<VF>(1.3814613e-3f);
    p = p * r + 8.3687101e-3f;
    p = p * r + 4.1668389e-2f;
    p = p * r + 1.6666521e-1f;
    p = p * r + 4.9999994e-1f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    // bits(kr) = 0x4B400000 + k, so (bits(kr) << 23) + (127 << 23) = (k + 127) << 23 (mod 2^32): the float 2^k
    const VU scale = ((VU)kr << 23) + 0x3F800000u;
    return p * (VF)scale;
}

// log on W positive, finite, normal fp32 lanes: x = 2^e m, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s) with
// s = (m - 1) / (m + 1), |s| <= 0.1716, odd series to s^9 (truncation < 1e-9).
static inline __attribute__((always_inline)) VF vlog(VF x) {
    const VI bits = (VI)x;
    VI e = (bits >> 23) - 127;
    VF m = (VF)((bits & 0x007FFFFF) | 0x3F800000);
    const VI big = m > 1.41421356f;
    m = big ? m * 0.5f : m;
    e = e - big;  // big is -1 where true
    const VF f = m - 1.0f;
    const VF s = f / (f + 2.0f);
    const VF s2 = s * s;
    VF q = splat<VF>(1.0f / 9.0f);
    q = q * s2 + 1.0f / 7.0f;
    q = q * s2 + 1.0f / 5.0f;
    q = q * s2 + 1.0f / 3.0f;
    const VF two_s = s + s;
    return __builtin_convertvector(e, VF) * 0.693147180559945f + (two_s + two_s * s2 * q);
}

// softplus as torch computes it (threshold 20): x > 20 ? x : log1p(exp(x)); and its derivative exp(x) / (exp(x) + 1)
// (1 above the threshold). log1p(e) = log(1 + e) * e / ((1 + e) - 1) corrects the rounding of 1 + e.
static inline __attribute__((always_inline)) void vsoftplus(VF x, VF &sp, VF &grad) {
    const VF e = vexp(x);
    const VF u = e + 1.0f;
    const VF d = u - 1.0f;
    VF lp = vlog(u) * (e / d);  // d == 0: NaN here, replaced below
    lp = d == 0.0f ? e : lp;
    const VI big = x > 20.0f;
    sp = big ? x : lp;
    grad = big ? splat<VF>(1.0f) : e / u;
}

// fp64: exact libm per lane (the fp64 path is for checking, not speed).
static inline VD vexp(VD x) {
    VD r;
    for (int l = 0; l < Vec<double>::W; ++l) r[l] = std::exp(x[l]);
    return r;
}
static inline void vsoftplus(VD x, VD &sp, VD &grad) {
    for (int l = 0; l < Vec<double>::W; ++l) {
        const double e = std::exp(x[l]);
        sp[l] = x[l] > 20.0 ? x[l] : std::log1p(e);
        grad[l] = x[l] > 20.0 ? 1.0 : e / (e + 1.0);
    }
}

template <typename T> static inline __attribute__((always_inline)) typename Vec<T>::V vsigmoid(typename Vec<T>::V x) {
    return T(1) / (T(1) + vexp(-x));
}

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

// f(n) for n in [0, N); fully unrolled when the trip count is a compile-time constant (NF > 0: ~10% faster, the
// partial sums then sit in fixed registers).
template <int NF, class F> static inline __attribute__((always_inline)) void for_n(int64_t N, F &&f) {
    if constexpr (NF > 0) {
#pragma GCC unroll 64
        for (int64_t n = 0; n < NF; ++n) f(n);
    } else {
        for (int64_t n = 0; n < N; ++n) f(n);
    }
}

template <typename T> struct SS {
    const T *u, *delta, *bias, *A, *Bm, *Cm, *Dv, *z, *h0;
    T *out, *last, *ckpt;
    // backward
    const T *dout, *dlast;
    T *du, *ddelta, *dz, *dA_part, *dB_part, *dC_part, *dD_part, *dbias_part, *dh0;
    int64_t Bt, D, L, N, G, S, K;
    bool softplus;
};

// One block = W consecutive channels of a group, starting at channel c0, nl <= W of them real (the rest of the lanes
// are padding: zero inputs, so they stay exactly zero and are never stored).
template <typename T> struct Lanes {
    static constexpr int W = Vec<T>::W;
    using V = typename Vec<T>::V;
    int nl;
    alignas(64) T tmp[W];
    // lane l <- base[l * stride] (fill beyond nl)
    V gather(const T *base, int64_t stride) {
        for (int l = 0; l < W; ++l) tmp[l] = l < nl ? base[l * stride] : T(0);
        return vload<V>(tmp);
    }
    void scatter(T *base, int64_t stride, V v) {
        vstore(tmp, v);
        for (int l = 0; l < nl; ++l) base[l * stride] = tmp[l];
    }
    // rows [row0, row0 + nl) of a [*, L] array, steps [t0, t0 + len) -> tile[j * W + l]
    void load_tile(T *tile, const T *src, int64_t row0, int64_t L, int64_t t0, int len) {
        for (int l = 0; l < nl; ++l) {
            const T *s = src + (row0 + l) * L + t0;
            for (int j = 0; j < len; ++j) tile[j * W + l] = s[j];
        }
    }
    void store_tile(T *dst, const T *tile, int64_t row0, int64_t L, int64_t t0, int len) {
        for (int l = 0; l < nl; ++l) {
            T *d = dst + (row0 + l) * L + t0;
            for (int j = 0; j < len; ++j) d[j] = tile[j * W + l];
        }
    }
};

// blocks [blk0, blk1) of group g: block i covers the group's channels [i W, min((i + 1) W, D / G))
template <typename T> static void block_range(const SS<T> &a, int64_t g, int64_t s, int64_t &blk0, int64_t &blk1) {
    const int64_t Dg = a.D / a.G, nblk = (Dg + Vec<T>::W - 1) / Vec<T>::W;
    (void)g;
    blk0 = nblk * s / a.S;
    blk1 = nblk * (s + 1) / a.S;
}

constexpr int FWD_TILE = 64;  // steps per transposed tile in the forward

// NF > 0: the state size as a compile-time constant (fully unrolled loop over n); 0: runtime a.N.
template <typename T, int NF>
static void ss_fwd_task(const SS<T> &a, int64_t b, int64_t g, int64_t blk0, int64_t blk1) {
    using V = typename Vec<T>::V;
    constexpr int W = Vec<T>::W, TC = FWD_TILE;
    const int64_t L = a.L, N = NF > 0 ? NF : a.N, K = a.K, nK = (L + K - 1) / K, Dg = a.D / a.G;
    std::vector<V> Av(N), h(N);
    std::vector<T> tiles(5 * TC * W);  // [TC, W] tiles: u, delta, z, dt, out
    T *ub = tiles.data(), *xb = ub + TC * W, *zb = xb + TC * W, *db = zb + TC * W, *ob = db + TC * W;
    const T *Bp = a.Bm + (b * a.G + g) * N * L, *Cp = a.Cm + (b * a.G + g) * N * L;
    Lanes<T> ln{};
    for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t c0 = g * Dg + blk * W, row0 = b * a.D + c0;
        ln.nl = static_cast<int>(std::min<int64_t>(W, Dg - blk * W));
        for (int64_t n = 0; n < N; ++n) {
            Av[n] = ln.gather(a.A + c0 * N + n, N);
            h[n] = a.h0 ? ln.gather(a.h0 + row0 * N + n, N) : V{};
        }
        const V Dd = a.Dv ? ln.gather(a.Dv + c0, 1) : V{};
        const V bias = a.bias ? ln.gather(a.bias + c0, 1) : V{};
        if (ln.nl < W) std::fill(tiles.begin(), tiles.end(), T(0));
        int64_t next_ck = 0;
        for (int64_t t0 = 0; t0 < L; t0 += TC) {
            const int len = static_cast<int>(std::min<int64_t>(TC, L - t0));
            ln.load_tile(ub, a.u, row0, L, t0, len);
            ln.load_tile(xb, a.delta, row0, L, t0, len);
            if (a.z) ln.load_tile(zb, a.z, row0, L, t0, len);
            // dt for the whole tile first (the scan loop then holds only the per-(step, n) work)
            for (int j = 0; j < len; ++j) {
                V dtv = vload<V>(xb + j * W) + bias, unused;
                if (a.softplus) vsoftplus(dtv, dtv, unused);
                vstore(db + j * W, dtv);
            }
            for (int j = 0; j < len; ++j) {
                const int64_t t = t0 + j;
                if (a.ckpt && t == next_ck) {
                    for (int64_t n = 0; n < N; ++n) ln.scatter(a.ckpt + (row0 * nK + t / K) * N + n, nK * N, h[n]);
                    next_ck += K;
                }
                const V dtv = vload<V>(db + j * W), dtu = dtv * vload<V>(ub + j * W);
                V y0 = {}, y1 = {};
                const T *__restrict Bt_ = Bp + t;
                const T *__restrict Ct_ = Cp + t;
                for_n<NF>(N, [&](int64_t n) __attribute__((always_inline)) {
                    const V e = vexp(dtv * Av[n]);
                    const V hn = e * h[n] + dtu * Bt_[n * L];
                    h[n] = hn;
                    if (n & 1) y1 += Ct_[n * L] * hn;  // two partial sums: a shorter dependency chain
                    else y0 += Ct_[n * L] * hn;
                });
                vstore(ob + j * W, y0 + y1);
            }
            for (int j = 0; j < len; ++j) {  // + D u, then the gate
                const V uv = vload<V>(ub + j * W);
                V y = vload<V>(ob + j * W) + Dd * uv;
                if (a.z) {
                    const V zv = vload<V>(zb + j * W);
                    y = y * (zv * vsigmoid<T>(zv));
                }
                vstore(ob + j * W, y);
            }
            ln.store_tile(a.out, ob, row0, L, t0, len);
        }
        for (int64_t n = 0; n < N; ++n) ln.scatter(a.last + row0 * N + n, N, h[n]);
    }
}

template <typename T, int NF>
static void ss_bwd_task(const SS<T> &a, int64_t b, int64_t g, int64_t s, int64_t blk0, int64_t blk1) {
    using V = typename Vec<T>::V;
    constexpr int W = Vec<T>::W;
    const int64_t L = a.L, N = NF > 0 ? NF : a.N, K = a.K, nK = (L + K - 1) / K, Dg = a.D / a.G;
    const int64_t nb = blk1 - blk0;
    T *dBp = a.dB_part + ((b * a.G + g) * a.S + s) * N * L;
    T *dCp = a.dC_part + ((b * a.G + g) * a.S + s) * N * L;
    if (nb <= 0) {
        std::fill(dBp, dBp + N * L, T(0));
        std::fill(dCp, dCp + N * L, T(0));
        return;
    }
    const T *Bp = a.Bm + (b * a.G + g) * N * L, *Cp = a.Cm + (b * a.G + g) * N * L;
    // per block, carried across chunks: adjoint state, dA, dD and dbias accumulators
    std::vector<V> dh(nb * N), dAacc(nb * N, V{}), dDacc(nb, V{}), dbacc(nb, V{});
    // per chunk
    std::vector<V> Av(N), hbuf((K + 1) * N), ebuf(K * N), dBacc(K * N), dCacc(K * N), dtb(K), sgb(K), yb(K);
    std::vector<T> tiles(7 * K * W);
    T *ub = tiles.data(), *xb = ub + K * W, *zb = xb + K * W, *gb = zb + K * W;
    T *dub = gb + K * W, *dxb = dub + K * W, *dzb = dxb + K * W;
    Lanes<T> ln{};
    for (int64_t i = 0; i < nb; ++i) {
        const int64_t c0 = g * Dg + (blk0 + i) * W, row0 = b * a.D + c0;
        ln.nl = static_cast<int>(std::min<int64_t>(W, Dg - (blk0 + i) * W));
        for (int64_t n = 0; n < N; ++n) dh[i * N + n] = a.dlast ? ln.gather(a.dlast + row0 * N + n, N) : V{};
    }
    for (int64_t k = nK - 1; k >= 0; --k) {
        const int64_t t0 = k * K;
        const int len = static_cast<int>(std::min<int64_t>(K, L - t0));
        std::fill(dBacc.begin(), dBacc.begin() + len * N, V{});
        std::fill(dCacc.begin(), dCacc.begin() + len * N, V{});
        for (int64_t i = 0; i < nb; ++i) {
            const int64_t c0 = g * Dg + (blk0 + i) * W, row0 = b * a.D + c0;
            ln.nl = static_cast<int>(std::min<int64_t>(W, Dg - (blk0 + i) * W));
            for (int64_t n = 0; n < N; ++n) {
                Av[n] = ln.gather(a.A + c0 * N + n, N);
                hbuf[n] = ln.gather(a.ckpt + (row0 * nK + k) * N + n, nK * N);
            }
            const V Dd = a.Dv ? ln.gather(a.Dv + c0, 1) : V{};
            const V bias = a.bias ? ln.gather(a.bias + c0, 1) : V{};
            if (ln.nl < W) std::fill(tiles.begin(), tiles.begin() + 4 * K * W, T(0));
            ln.load_tile(ub, a.u, row0, L, t0, len);
            ln.load_tile(xb, a.delta, row0, L, t0, len);
            ln.load_tile(gb, a.dout, row0, L, t0, len);
            if (a.z) ln.load_tile(zb, a.z, row0, L, t0, len);
            for (int j = 0; j < len; ++j) {
                const V x = vload<V>(xb + j * W) + bias;
                if (a.softplus) vsoftplus(x, dtb[j], sgb[j]);
                else dtb[j] = x;
            }
            // recompute the chunk's decays and states (and y where the gate needs it)
            for (int j = 0; j < len; ++j) {
                const int64_t t = t0 + j;
                const V dtv = dtb[j], dtu = dtv * vload<V>(ub + j * W);
                const V *__restrict hp = &hbuf[j * N];
                V *__restrict hn = &hbuf[(j + 1) * N];
                V *__restrict e = &ebuf[j * N];
                const T *__restrict Bt_ = Bp + t;
                const T *__restrict Ct_ = Cp + t;
                V y0 = {}, y1 = {};
                for_n<NF>(N, [&](int64_t n) __attribute__((always_inline)) {
                    const V ev = vexp(dtv * Av[n]);
                    e[n] = ev;
                    const V hv = ev * hp[n] + dtu * Bt_[n * L];
                    hn[n] = hv;
                    if (n & 1) y1 += Ct_[n * L] * hv;
                    else y0 += Ct_[n * L] * hv;
                });
                yb[j] = y0 + y1;
            }
            // d loss / d y (through the gate) and d loss / d z for the whole chunk, then the D u term
            V dD = dDacc[i];
            for (int j = 0; j < len; ++j) {
                const V uv = vload<V>(ub + j * W), gv = vload<V>(gb + j * W);
                V dy = gv;
                if (a.z) {
                    const V zv = vload<V>(zb + j * W), sg = vsigmoid<T>(zv);
                    dy = gv * (zv * sg);
                    vstore(dzb + j * W, gv * (yb[j] + Dd * uv) * sg * (T(1) + zv * (T(1) - sg)));
                }
                vstore(gb + j * W, dy);
                dD += dy * uv;
            }
            // adjoint recurrence, newest step first
            V *__restrict dhv = &dh[i * N];
            V *__restrict dAv = &dAacc[i * N];
            V db = dbacc[i];
            for (int j = len - 1; j >= 0; --j) {
                const int64_t t = t0 + j;
                const V dtv = dtb[j], uv = vload<V>(ub + j * W), dtu = dtv * uv, dy = vload<V>(gb + j * W);
                const V *__restrict hp = &hbuf[j * N];
                const V *__restrict hn = &hbuf[(j + 1) * N];
                const V *__restrict e = &ebuf[j * N];
                V *__restrict dBa = &dBacc[j * N];
                V *__restrict dCa = &dCacc[j * N];
                const T *__restrict Bt_ = Bp + t;
                const T *__restrict Ct_ = Cp + t;
                V sB0 = {}, sB1 = {}, sL0 = {}, sL1 = {};
                for_n<NF>(N, [&](int64_t n) __attribute__((always_inline)) {
                    const T Bn = Bt_[n * L], Cn = Ct_[n * L];
                    const V dhn = dhv[n] + dy * Cn;  // d loss / d h_t
                    dCa[n] += dy * hn[n];
                    dBa[n] += dhn * dtu;
                    const V de = dhn * e[n];  // d loss / d h_{t-1}
                    const V gl = de * hp[n];   // d loss / d (dt A_n)
                    dAv[n] += gl * dtv;
                    dhv[n] = de;
                    if (n & 1) {
                        sB1 += dhn * Bn;
                        sL1 += gl * Av[n];
                    } else {
                        sB0 += dhn * Bn;
                        sL0 += gl * Av[n];
                    }
                });
                const V sB = sB0 + sB1;
                vstore(dub + j * W, dy * Dd + dtv * sB);
                V ddt = uv * sB + (sL0 + sL1);
                if (a.softplus) ddt = ddt * sgb[j];
                db += ddt;
                vstore(dxb + j * W, ddt);
            }
            dDacc[i] = dD;
            dbacc[i] = db;
            ln.store_tile(a.du, dub, row0, L, t0, len);
            ln.store_tile(a.ddelta, dxb, row0, L, t0, len);
            if (a.z) ln.store_tile(a.dz, dzb, row0, L, t0, len);
        }
        // lanes (channels of the group) -> the task's dB / dC slot
        for (int64_t n = 0; n < N; ++n)
            for (int j = 0; j < len; ++j) {
                const V vb = dBacc[j * N + n], vc = dCacc[j * N + n];
                T sb = 0, sc = 0;
                for (int l = 0; l < W; ++l) {
                    sb += vb[l];
                    sc += vc[l];
                }
                dBp[n * L + t0 + j] = sb;
                dCp[n * L + t0 + j] = sc;
            }
    }
    for (int64_t i = 0; i < nb; ++i) {
        const int64_t c0 = g * Dg + (blk0 + i) * W, row0 = b * a.D + c0;
        ln.nl = static_cast<int>(std::min<int64_t>(W, Dg - (blk0 + i) * W));
        for (int64_t n = 0; n < N; ++n) {
            ln.scatter(a.dh0 + row0 * N + n, N, dh[i * N + n]);
            ln.scatter(a.dA_part + row0 * N + n, N, dAacc[i * N + n]);
        }
        ln.scatter(a.dD_part + row0, 1, dDacc[i]);
        ln.scatter(a.dbias_part + row0, 1, dbacc[i]);
    }
}

// tasks: (b, g, s), s = block range of group g
template <typename T> static void ss_forward(const SS<T> &a, int nthreads) {
    run_tasks(a.Bt * a.G * a.S, nthreads, [&](int64_t task) {
        const int64_t s = task % a.S, g = (task / a.S) % a.G, b = task / (a.S * a.G);
        int64_t blk0, blk1;
        block_range(a, g, s, blk0, blk1);
        if constexpr (sizeof(T) == 4) {  // fp32, Mamba-1's usual state size: n loop with a constant trip count
            if (a.N == 16) return ss_fwd_task<T, 16>(a, b, g, blk0, blk1);
        }
        ss_fwd_task<T, 0>(a, b, g, blk0, blk1);
    });
}

template <typename T> static void ss_backward(const SS<T> &a, int nthreads) {
    run_tasks(a.Bt * a.G * a.S, nthreads, [&](int64_t task) {
        const int64_t s = task % a.S, g = (task / a.S) % a.G, b = task / (a.S * a.G);
        int64_t blk0, blk1;
        block_range(a, g, s, blk0, blk1);
        if constexpr (sizeof(T) == 4) {
            if (a.N == 16) return ss_bwd_task<T, 16>(a, b, g, s, blk0, blk1);
        }
        ss_bwd_task<T, 0>(a, b, g, s, blk0, blk1);
    });
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

// ---------------------------------------------------------------------------------------------------- delta rule
// Gated delta rule (Gated DeltaNet; the plain delta rule is g = null), sequential and fused, per (batch, head) task:
//     a = exp(g_t);  p = S^T k_t;  r = v_t - a p;  u = beta_t r;  S = a S + k_t u^T;  o_t = S^T (scale q_t)
// The [K, V] state lives in L1/L2; every loop runs along V (contiguous), reductions over K are vertical. The
// forward stores the state entering every chunk of CK steps when a backward follows. The backward walks the
// chunks in reverse, recomputes the chunk's states (CK + 1 of them) and r from the checkpoint, then runs the adjoint:
//     dS += scale q do^T;  dq = scale S_t do;  du = dS^T k;  dk = dS u;  dbeta = du . r;  dv = beta du;
//     dp = -a beta du;  dS' = dS + k dp^T;  dk += S_{t-1} dp... (with S' = a S_{t-1}: dk += a S_{t-1}^T-row . dp)
//     dg = a <dS', S_{t-1}>;  dS = a dS'
// Layouts: q, k [Bt, L, H, K]; v, out, dout [Bt, L, H, V]; g, beta [Bt, L, H]; h0, last [Bt, H, K, V];
// ckpt [Bt, H, nC, K, V] (nC = ceil(L / CK)). Optional pointers are null when absent.
template <typename T> struct DR {
    const T *q, *k, *v, *g, *beta, *h0;
    T *out, *last, *ckpt;
    const T *dout, *dlast;
    T *dq, *dk, *dv, *dg, *dbeta, *dh0;
    int64_t Bt, L, H, K, V, CK;
    T scale;
};

// one step of the forward on state S [K, V]; writes r (if non-null) and o
template <typename T>
static inline void dr_step(T *__restrict S, const T *__restrict q, const T *__restrict k, const T *__restrict v, T a,
                           T beta, T scale, int64_t K, int64_t V, T *__restrict p, T *__restrict u, T *__restrict r,
                           T *__restrict o) {
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) p[j] = T(0);
    for (int64_t i = 0; i < K; ++i) {
        const T ki = k[i];
        const T *__restrict Si = S + i * V;
#pragma omp simd
        for (int64_t j = 0; j < V; ++j) p[j] += ki * Si[j];
    }
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) {
        const T rj = v[j] - a * p[j];
        if (r) r[j] = rj;
        u[j] = beta * rj;
        o[j] = T(0);
    }
    for (int64_t i = 0; i < K; ++i) {
        const T ki = k[i], qi = scale * q[i];
        T *__restrict Si = S + i * V;
#pragma omp simd
        for (int64_t j = 0; j < V; ++j) {
            const T s = a * Si[j] + ki * u[j];
            Si[j] = s;
            o[j] += qi * s;
        }
    }
}

template <typename T> static void dr_forward(const DR<T> &d, int nthreads) {
    const int64_t L = d.L, H = d.H, K = d.K, V = d.V, CK = d.CK, nC = (L + CK - 1) / CK;
    run_tasks(d.Bt * H, nthreads, [&](int64_t task) {
        const int64_t b = task / H, h = task % H;
        std::vector<T> S(K * V), p(V), u(V);
        if (d.h0) std::memcpy(S.data(), d.h0 + task * K * V, sizeof(T) * K * V);
        for (int64_t t = 0; t < L; ++t) {
            if (d.ckpt && t % CK == 0)
                std::memcpy(d.ckpt + (task * nC + t / CK) * K * V, S.data(), sizeof(T) * K * V);
            const int64_t row = (b * L + t) * H + h;
            const T a = d.g ? std::exp(d.g[row]) : T(1);
            dr_step(S.data(), d.q + row * K, d.k + row * K, d.v + row * V, a, d.beta[row], d.scale, K, V, p.data(),
                    u.data(), (T *)nullptr, d.out + row * V);
        }
        if (d.last) std::memcpy(d.last + task * K * V, S.data(), sizeof(T) * K * V);
    });
}

template <typename T> static void dr_backward(const DR<T> &d, int nthreads) {
    const int64_t L = d.L, H = d.H, K = d.K, V = d.V, CK = d.CK, nC = (L + CK - 1) / CK, KV = K * V;
    run_tasks(d.Bt * H, nthreads, [&](int64_t task) {
        const int64_t b = task / H, h = task % H;
        std::vector<T> buf((CK + 1) * KV), R(CK * V), p(V), u(V), o(V), du(V), dp(V), dS(KV, T(0));
        if (d.dlast) std::memcpy(dS.data(), d.dlast + task * KV, sizeof(T) * KV);
        for (int64_t c = nC - 1; c >= 0; --c) {
            const int64_t t0 = c * CK, n = std::min(CK, L - t0);
            std::memcpy(buf.data(), d.ckpt + (task * nC + c) * KV, sizeof(T) * KV);
            for (int64_t j = 0; j < n; ++j) {  // recompute S_{t0+j} into buf[j + 1] and r_j
                const int64_t row = (b * L + t0 + j) * H + h;
                const T a = d.g ? std::exp(d.g[row]) : T(1);
                std::memcpy(buf.data() + (j + 1) * KV, buf.data() + j * KV, sizeof(T) * KV);
                dr_step(buf.data() + (j + 1) * KV, d.q + row * K, d.k + row * K, d.v + row * V, a, d.beta[row],
                        d.scale, K, V, p.data(), u.data(), R.data() + j * V, o.data());
            }
            for (int64_t j = n - 1; j >= 0; --j) {
                const int64_t row = (b * L + t0 + j) * H + h;
                const T a = d.g ? std::exp(d.g[row]) : T(1), beta = d.beta[row];
                const T *__restrict q = d.q + row * K, *__restrict k = d.k + row * K;
                const T *__restrict dout = d.dout + row * V, *__restrict r = R.data() + j * V;
                const T *__restrict Sp = buf.data() + j * KV, *__restrict St = buf.data() + (j + 1) * KV;
                T *__restrict dq = d.dq + row * K, *__restrict dk = d.dk + row * K;
#pragma omp simd
                for (int64_t v = 0; v < V; ++v) {
                    u[v] = beta * r[v];
                    du[v] = T(0);
                }
                for (int64_t i = 0; i < K; ++i) {  // pass A: dS += s q do^T; dq; du = dS^T k; dk = dS u
                    const T qi = d.scale * q[i], ki = k[i];
                    T *__restrict dSi = dS.data() + i * V;
                    const T *__restrict Sti = St + i * V;
                    T accq = T(0), acck = T(0);
#pragma omp simd reduction(+ : accq, acck)
                    for (int64_t v = 0; v < V; ++v) {
                        const T x = dSi[v] + qi * dout[v];
                        dSi[v] = x;
                        accq += Sti[v] * dout[v];
                        du[v] += ki * x;
                        acck += x * u[v];
                    }
                    dq[i] = d.scale * accq;
                    dk[i] = acck;
                }
                T db = T(0);
#pragma omp simd reduction(+ : db)
                for (int64_t v = 0; v < V; ++v) {
                    db += du[v] * r[v];
                    d.dv[row * V + v] = beta * du[v];
                    dp[v] = -beta * du[v];  // gradient of p' = a p = S'^T k
                }
                d.dbeta[row] = db;
                T dgacc = T(0);
                for (int64_t i = 0; i < K; ++i) {  // pass B: dk += S'^T dp; dS' = dS + k dp^T; dg; dS = a dS'
                    const T ki = k[i];
                    T *__restrict dSi = dS.data() + i * V;
                    const T *__restrict Spi = Sp + i * V;
                    T acck = T(0), accg = T(0);
#pragma omp simd reduction(+ : acck, accg)
                    for (int64_t v = 0; v < V; ++v) {
                        acck += Spi[v] * dp[v];
                        const T x = dSi[v] + ki * dp[v];
                        accg += x * Spi[v];
                        dSi[v] = a * x;
                    }
                    dk[i] += a * acck;
                    dgacc += accg;
                }
                if (d.dg) d.dg[row] = a * dgacc;
            }
        }
        if (d.dh0) std::memcpy(d.dh0 + task * KV, dS.data(), sizeof(T) * KV);
    });
}

}  // namespace


extern "C" {

int hybridc_ss_abi_version() { return 5; }

// lanes per vector of the selective scan kernel (dtype 0 = float32, 1 = float64): channels per block
int hybridc_ss_lanes(int dtype) { return dtype == 0 ? Vec<float>::W : Vec<double>::W; }

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

// dtype: 0 = float32, 1 = float64. bias, Dv, z and h0 may be null; ckpt may be null (no backward will follow).
// out = (C.h + D u) * silu(z) with dt = softplus(delta + bias) (softplus != 0) or delta + bias.
void hybridc_ss_forward(int dtype, int nthreads, int softplus, const void *u, const void *delta, const void *bias,
                        const void *A, const void *Bm, const void *Cm, const void *Dv, const void *z, const void *h0,
                        void *out, void *last, void *ckpt, int64_t Bt, int64_t D, int64_t L, int64_t N, int64_t G,
                        int64_t S, int64_t K) {
#define HYBRIDC_SS_ARGS(T)                                                                                  \
    SS<T> a{};                                                                                              \
    a.u = (const T *)u; a.delta = (const T *)delta; a.bias = (const T *)bias; a.A = (const T *)A;           \
    a.Bm = (const T *)Bm; a.Cm = (const T *)Cm; a.Dv = (const T *)Dv; a.z = (const T *)z;                   \
    a.softplus = softplus != 0;                                                                            \
    a.Bt = Bt; a.D = D; a.L = L; a.N = N; a.G = G; a.S = S; a.K = K;
#define HYBRIDC_SS_FWD(T)                                                                                   \
    {                                                                                                       \
        HYBRIDC_SS_ARGS(T)                                                                                  \
        a.h0 = (const T *)h0; a.out = (T *)out; a.last = (T *)last; a.ckpt = (T *)ckpt;                     \
        ss_forward(a, nthreads);                                                                            \
    }
    if (dtype == 0) HYBRIDC_SS_FWD(float) else HYBRIDC_SS_FWD(double)
#undef HYBRIDC_SS_FWD
}

// dlast may be null; dz is written only when z is given. Every element of the outputs is written.
void hybridc_ss_backward(int dtype, int nthreads, int softplus, const void *u, const void *delta, const void *bias,
                         const void *A, const void *Bm, const void *Cm, const void *Dv, const void *z,
                         const void *ckpt, const void *dout, const void *dlast, void *du, void *ddelta, void *dz,
                         void *dA_part, void *dB_part, void *dC_part, void *dD_part, void *dbias_part, void *dh0,
                         int64_t Bt, int64_t D, int64_t L, int64_t N, int64_t G, int64_t S, int64_t K) {
#define HYBRIDC_SS_BWD(T)                                                                                   \
    {                                                                                                       \
        HYBRIDC_SS_ARGS(T)                                                                                  \
        a.ckpt = (T *)ckpt; a.dout = (const T *)dout; a.dlast = (const T *)dlast;                           \
        a.du = (T *)du; a.ddelta = (T *)ddelta; a.dz = (T *)dz; a.dA_part = (T *)dA_part;                   \
        a.dB_part = (T *)dB_part; a.dC_part = (T *)dC_part; a.dD_part = (T *)dD_part;                       \
        a.dbias_part = (T *)dbias_part; a.dh0 = (T *)dh0;                                                   \
        ss_backward(a, nthreads);                                                                           \
    }
    if (dtype == 0) HYBRIDC_SS_BWD(float) else HYBRIDC_SS_BWD(double)
#undef HYBRIDC_SS_BWD
#undef HYBRIDC_SS_ARGS
}

// Gated delta rule (g may be null: the delta rule); h0, last, ckpt may be null. dtype 0 float32, 1 float64.
void hybridc_dr_forward(int dtype, int nthreads, const void *q, const void *k, const void *v, const void *g,
                        const void *beta, const void *h0, void *out, void *last, void *ckpt, int64_t Bt, int64_t L,
                        int64_t H, int64_t K, int64_t V, int64_t CK, double scale) {
#define HYBRIDC_DR_ARGS(T)                                                                                   \
    DR<T> d{};                                                                                               \
    d.q = (const T *)q; d.k = (const T *)k; d.v = (const T *)v; d.g = (const T *)g;                          \
    d.beta = (const T *)beta; d.Bt = Bt; d.L = L; d.H = H; d.K = K; d.V = V; d.CK = CK; d.scale = (T)scale;
#define HYBRIDC_DR_FWD(T)                                                                                    \
    {                                                                                                        \
        HYBRIDC_DR_ARGS(T)                                                                                   \
        d.h0 = (const T *)h0; d.out = (T *)out; d.last = (T *)last; d.ckpt = (T *)ckpt;                      \
        dr_forward(d, nthreads);                                                                             \
    }
    if (dtype == 0) HYBRIDC_DR_FWD(float) else HYBRIDC_DR_FWD(double)
#undef HYBRIDC_DR_FWD
}

// ckpt from the forward; dlast, dg (iff g), dh0 may be null.
void hybridc_dr_backward(int dtype, int nthreads, const void *q, const void *k, const void *v, const void *g,
                         const void *beta, const void *ckpt, const void *dout, const void *dlast, void *dq, void *dk,
                         void *dv, void *dg, void *dbeta, void *dh0, int64_t Bt, int64_t L, int64_t H, int64_t K,
                         int64_t V, int64_t CK, double scale) {
#define HYBRIDC_DR_BWD(T)                                                                                    \
    {                                                                                                        \
        HYBRIDC_DR_ARGS(T)                                                                                   \
        d.ckpt = (T *)ckpt; d.dout = (const T *)dout; d.dlast = (const T *)dlast; d.dq = (T *)dq;            \
        d.dk = (T *)dk; d.dv = (T *)dv; d.dg = (T *)dg; d.dbeta = (T *)dbeta; d.dh0 = (T *)dh0;              \
        dr_backward(d, nthreads);                                                                            \
    }
    if (dtype == 0) HYBRIDC_DR_BWD(float) else HYBRIDC_DR_BWD(double)
#undef HYBRIDC_DR_BWD
#undef HYBRIDC_DR_ARGS
}

}  // extern "C"
