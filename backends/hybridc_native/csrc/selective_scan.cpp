// Fused CPU selective scan (Mamba-1's S6 recurrence), forward and backward, per channel and state index n:
//     dt_t = softplus(delta_t + bias);  h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t;  y_t = C_t . h_t + D u_t;
//     out_t = y_t * silu(z_t)          (A [D, N]; B_t, C_t [N] shared by the channels of a group)
// Paper: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023, arXiv:2312.00752),
// Algorithm 2. Reference implementation: state-spaces/mamba's selective_scan_ref.
//
// Vectorisation: across CHANNELS, W of them per vector (vec_math.h). Per time step and state index n, the decay
// exp(dt A), the state update and the C-weighted output sum are all lane-parallel (no horizontal sums in the
// forward). The [W channels, N] state lives in L1, the loop over n is unrolled for N = 16.
// u, delta, z and the outputs are [B, D, L] (channels strided by L): they are transposed into [T, W] tiles per chunk
// of T steps (loads/stores on the load-store ports, overlapping the FP work); B_t and C_t are the same for all channels
// of a group, so they are scalar broadcasts from their natural [B, G, N, L] layout.
//
// Fused elementwise work: dt = softplus(delta + bias), out = y * silu(z) and their derivatives are computed in the
// kernel ([B, D, L] work, W lanes at a time), so a forward is one pass over the inputs and one write of `out`.
// exp and softplus are vec_math.h's vectorised ones (exp: max relative error 7.7e-8; softplus: 3e-7).
//
// Cost model (measured, B4 L1024 D512 N16): the forward is bound by FP-pipe throughput, ~15 FMA-pipe ops per
// (step, n, 8 channels), about 1x the time of a warm torch.exp over [B, L, D, N] (which is memory-bound); the
// backward does ~23 (recompute + adjoint) and is ~3x the forward.
//
// Work split: one task per (batch, group, block range S); tasks are pulled by run_tasks' `nthreads` threads. The
// forward stores the state every K steps when a backward will follow. The backward walks chunks of K steps in
// reverse; per chunk it visits the task's channel blocks one after the other (each block keeps its adjoint state
// between chunks), recomputing the chunk's states and decays from the checkpoint, then running the adjoint
// recurrence. dB and dC (shared by the channels of a group) are accumulated lane-wise over all blocks of the chunk
// and reduced across lanes once per chunk into the task's own [N, L] slot (summed over slots by the caller): no
// races, deterministic results.
//
// Layouts (all contiguous, scalar_t = float or double):
//   u, delta, z, out, dout, du, ddelta, dz : [Bt, D, L]
//   A : [D, N]          Bm, Cm : [Bt, G, N, L]          dB_part, dC_part : [Bt, G, S, N, L] (S tasks per group)
//   bias, Dv : [D]      dbias_part, dD_part : [Bt, D]   h0, last, dlast, dh0, dA_part : [Bt, D, N]
//   ckpt : [Bt, D, nK, N] (nK = ceil(L / K))
// Optional pointers are null when absent.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "vec_math.h"

namespace {

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

}  // namespace

extern "C" {

// lanes per vector of the selective scan kernel (dtype 0 = float32, 1 = float64): channels per block
int hybridc_ss_lanes(int dtype) { return dtype == 0 ? Vec<float>::W : Vec<double>::W; }

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

}  // extern "C"
