// Fused CPU SSD (Mamba-2's scalar-decay state space recurrence), forward and backward, per (batch, head):
//     dt_t = softplus(dt_t + bias_h)  (or dt_t + bias_h);  a_t = exp(dt_t A_h)
//     S_t  = a_t S_{t-1} + (dt_t x_t) B_t^T          S: [P, N]
//     y_t  = S_t C_t + D_h x_t                        (D per (h, p))
// Paper: Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
// Duality" (ICML 2024, arXiv:2405.21060), Sec. 3-4 (the recurrent form of SSD). Reference implementation:
// mamba_ssm's selective_state_update / ssd_minimal (state-spaces/mamba); our oracle is hybridc_torch's
// ops/ssd/naive.py.
//
// Why sequential and not chunked: the decay is one scalar per (step, head), so a step costs ~3 FMA-pipe ops per
// state element (S = a S + dtx B: mul + fma; y += C S: fma) with the state in L1; the chunked algorithm's
// T x T "attention" blocks do ~T / N times more arithmetic. Mamba-1's selective scan (selective_scan.cpp) pays one
// exp per state element; here the exp is once per (step, head).
//
// Vectorisation: across the head dim P, R vectors of W lanes per block (BW = R W lanes: p0 .. p0 + BW; R = 4 for
// P = 64 with AVX-512, one block per head). The state is walked in passes of NC rows n at a time whose [NC][R]
// vectors stay in registers across a tile of steps (forward: 4 rows, 32 steps; backward: 2 rows, one chunk of K
// steps), so a step's update costs no state loads or stores; B_t[n] and C_t[n] are scalar broadcasts (shared by all
// lanes); y accumulates over the passes in the tile. dt (softplus, bias) and a_t for a tile are computed first, W
// steps per vector.
//
// Work split: one task per (batch, head, block range s of S); tasks are pulled by run_tasks' threads.
// The forward stores the state every K steps when a backward will follow. The backward walks chunks of K steps in
// reverse; per chunk and block, for each pass of NC rows it recomputes those rows' K + 1 states from the checkpoint,
// then runs the adjoint (newest step first) with their dS rows in registers:
//     dS  += dy_t C_t^T;  dC_t = S_t^T dy_t;  dB_t = dS^T (dt_t x_t);  g_t = dS B_t (d/d(dt x));  ga_t = <dS, S_{t-1}>
//     dx_t = dt_t g_t + D dy_t;  d dt_t = <g_t, x_t> + ga_t a_t A_h;  dA_h += ga_t a_t dt_t;  dS = a_t dS
// dB_t and dC_t (sums over the lanes of a head) are reduced per (step, pass) by a shuffle tree (lane_sums) and added
// into the task's own slot; g, ga and <g, x> are accumulated lane-wise and reduced once per chunk. Each task writes
// only its own slots (summed over the S slots and the heads of a group by the caller): no races, deterministic.
//
// Layouts (contiguous unless strides are given for x, dt, Bm, Cm; scalar_t = float or double; H heads, G groups,
// head h reads group h / (H / G)):
//   x, y, dy, dx : [Bt, L, H, P]     dt, ddt_part : [Bt, L, H] / [Bt, H, S, L]     Bm, Cm : [Bt, L, G, N]
//   A, bias : [H]     Dv : [H, P]     h0, last, dlast, dh0 : [Bt, H, P, N]     dA_part : [Bt, H, S]
//   dD_part : [Bt, H, P]     dB_part, dC_part : [Bt, H, S, L, N]     ckpt : [Bt, H, nK, N, NB BW] (nK = ceil(L / K),
//   NB = blocks per head, padded lanes)
// Optional pointers (bias, Dv, h0, ckpt, dlast, dh0) are null when absent.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "vec_math.h"

namespace {

template <typename T> struct SSDArgs {
    const T *x, *dt, *bias, *A, *Bm, *Cm, *Dv, *h0;
    T *y, *last, *ckpt;
    const T *dy, *dlast;
    T *dx, *ddt_part, *dA_part, *dB_part, *dC_part, *dD_part, *dh0;
    int64_t Bt, L, H, P, N, G, S, K;
    // element strides (batch, step, channel) of x (channel h P + p), dt (channel h), Bm and Cm (channel g N + n)
    int64_t sx[3], sdt[3], sB[3], sC[3];
    bool softplus;
};

// strides: 12 values (x, dt, Bm, Cm: batch, step, channel), or null for the contiguous layouts
template <typename T> static void ssd_strides(SSDArgs<T> &a, const int64_t *st) {
    const int64_t def[12] = {a.L * a.H * a.P, a.H * a.P, 1, a.L * a.H, a.H, 1,
                             a.L * a.G * a.N, a.G * a.N, 1, a.L * a.G * a.N, a.G * a.N, 1};
    const int64_t *v = st ? st : def;
    for (int i = 0; i < 3; ++i) {
        a.sx[i] = v[i];
        a.sdt[i] = v[3 + i];
        a.sB[i] = v[6 + i];
        a.sC[i] = v[9 + i];
    }
}

// vectors per block: enough lanes to cover P, at most 4 vectors (the per-lane state of a step stays in registers)
template <typename T> static int ssd_vectors(int64_t P) {
    const int64_t W = Vec<T>::W;
    return P > 2 * W ? 4 : P > W ? 2 : 1;
}

template <typename T> struct SSDTask {
    static constexpr int W = Vec<T>::W;
    using V = typename Vec<T>::V;
    const SSDArgs<T> &a;
    int64_t b, h, g, BW, NB;
    // dt_t, a_t (and softplus' derivative) for steps [t0, t0 + len) of head h
    void decays(int64_t t0, int len, T *dtb, T *eb, T *sgb) const {
        const T bias = a.bias ? a.bias[h] : T(0), Ah = a.A[h];
        alignas(64) T raw[W];
        for (int j0 = 0; j0 < len; j0 += W) {
            for (int l = 0; l < W; ++l)
                raw[l] = j0 + l < len ? a.dt[b * a.sdt[0] + (t0 + j0 + l) * a.sdt[1] + h * a.sdt[2]] + bias : T(0);
            V d = vload<V>(raw), sg = splat<V>(T(1));
            if (a.softplus) vsoftplus(d, d, sg);
            vstore(dtb + j0, d);
            vstore(eb + j0, vexp(d * Ah));
            if (sgb) vstore(sgb + j0, sg);
        }
    }
    // a [Bt, L, H, P] array (strides st: batch, step, channel h P + p; null: contiguous), steps [t0, t0 + len),
    // lanes [p0, p0 + nl) -> tile[j * BW + l] (zero padded). Channel-major sources (step stride 1, as the layer's
    // view of its conv output) are read one lane's run of steps at a time.
    void load_tile(T *tile, const T *src, const int64_t *st, int64_t t0, int len, int64_t p0, int nl) const {
        if (nl < BW)
            for (int j = 0; j < len; ++j) std::fill(tile + j * BW + nl, tile + (j + 1) * BW, T(0));
        if (!st || st[2] == 1) {
            const int64_t s0 = st ? st[0] : a.L * a.H * a.P, s1 = st ? st[1] : a.H * a.P;
            for (int j = 0; j < len; ++j)
                std::memcpy(tile + j * BW, src + b * s0 + (t0 + j) * s1 + h * a.P + p0, sizeof(T) * nl);
            return;
        }
        for (int l = 0; l < nl; ++l) {
            const T *s = src + b * st[0] + t0 * st[1] + (h * a.P + p0 + l) * st[2];
            for (int j = 0; j < len; ++j) tile[j * BW + l] = s[j * st[1]];
        }
    }
    void store_tile(T *dst, const T *tile, int64_t t0, int len, int64_t p0, int nl) const {
        for (int j = 0; j < len; ++j)
            std::memcpy(dst + ((b * a.L + t0 + j) * a.H + h) * a.P + p0, tile + j * BW, sizeof(T) * nl);
    }
    // [Bt, H, P, N] state rows p0 .. p0 + nl <-> the block's [N][R] vectors (padding lanes 0)
    void gather_state(V *st, const T *src, int64_t p0, int nl, int R) const {
        std::vector<T> tmp(a.N * BW, T(0));
        for (int l = 0; l < nl; ++l)
            for (int64_t n = 0; n < a.N; ++n) tmp[n * BW + l] = src[((b * a.H + h) * a.P + p0 + l) * a.N + n];
        for (int64_t i = 0; i < a.N * R; ++i) st[i] = vload<V>(tmp.data() + i * W);
    }
    void scatter_state(T *dst, const V *st, int64_t p0, int nl, int R) const {
        std::vector<T> tmp(a.N * BW);
        for (int64_t i = 0; i < a.N * R; ++i) vstore(tmp.data() + i * W, st[i]);
        for (int l = 0; l < nl; ++l)
            for (int64_t n = 0; n < a.N; ++n) dst[((b * a.H + h) * a.P + p0 + l) * a.N + n] = tmp[n * BW + l];
    }
    T *ckpt_at(int64_t k, int64_t blk) const {  // the block's [N][R] vectors of checkpoint k
        const int64_t nK = (a.L + a.K - 1) / a.K;
        return a.ckpt + ((b * a.H + h) * nK + k) * a.N * NB * BW + blk * a.N * BW;
    }
};

constexpr int SSD_TILE = 32;  // steps per tile in the forward
constexpr int SSD_NC = 4;     // state rows n per pass: the [NC][R] state vectors stay in registers over a tile
constexpr int SSD_NC_BWD = 2;  // the same in the backward (its dS rows; fewer: more live vectors per row)

template <typename T> static inline T hsum(typename Vec<T>::V v) {
    T s = 0;
    for (int l = 0; l < Vec<T>::W; ++l) s += v[l];
    return s;
}

// Lane sums of NV vectors at once (NV a power of two <= W): a tree of half-swaps, each stage pairing vectors and
// adding their lower and upper halves of every segment (2 shuffles + 1 add per pair), so NV vectors cost ~3 NV ops
// instead of NV horizontal sums. After log2(NV) stages, segment q (W / NV lanes) holds partial sums of vector
// bitreverse(q).
constexpr int lo_lane(int W, int m, int i) { return i % m < m / 2 ? i / m * m + i % m : W + i / m * m + i % m - m / 2; }
constexpr int hi_lane(int W, int m, int i) { return i % m < m / 2 ? i / m * m + m / 2 + i % m : W + i / m * m + i % m; }
template <typename V, int W, int m, std::size_t... I> static inline __attribute__((always_inline)) V
half_swap_add(V a, V b, std::index_sequence<I...>) {
    return __builtin_shufflevector(a, b, lo_lane(W, m, I)...) + __builtin_shufflevector(a, b, hi_lane(W, m, I)...);
}
template <typename V, int W, int m, int cnt> static inline __attribute__((always_inline)) void lane_tree(V *v) {
    if constexpr (cnt > 1) {
        for (int k = 0; k < cnt / 2; ++k)
            v[k] = half_swap_add<V, W, m>(v[2 * k], v[2 * k + 1], std::make_index_sequence<W>{});
        lane_tree<V, W, m / 2, cnt / 2>(v);
    }
}
constexpr int bit_reverse(int q, int bits) {
    int r = 0;
    for (int i = 0; i < bits; ++i) r |= ((q >> i) & 1) << (bits - 1 - i);
    return r;
}
template <typename T, int NV>
static inline __attribute__((always_inline)) void lane_sums(typename Vec<T>::V *v, T *out) {
    using V = typename Vec<T>::V;
    constexpr int W = Vec<T>::W;
    if constexpr (NV >= 2 && NV <= W && (NV & (NV - 1)) == 0) {
        constexpr int bits = __builtin_ctz(NV), m = W / NV;
        lane_tree<V, W, W, NV>(v);
        for (int q = 0; q < NV; ++q) {
            T s = 0;
            for (int l = 0; l < m; ++l) s += v[0][q * m + l];
            out[bit_reverse(q, bits)] = s;
        }
    } else {
        for (int k = 0; k < NV; ++k) out[k] = hsum<T>(v[k]);
    }
}

// One forward pass over a tile for state rows [n0, n0 + NC): their [NC][R] vectors in registers across the steps;
// y (the tile, already D x) += C_t[n] S_t[n] over these rows.
template <typename T, int R, int NC> static inline __attribute__((always_inline)) void
ssd_fwd_rows(const SSDArgs<T> &a, const SSDTask<T> &tk, typename Vec<T>::V *st, int64_t blk, int64_t n0, int64_t t0,
             int len, const T *dtxt, T *yt, const T *eb) {
    using V = typename Vec<T>::V;
    constexpr int W = Vec<T>::W, BW = R * W;
    const int64_t N = a.N, K = a.K;
    V hs[NC][R];
    for (int i = 0; i < NC; ++i)
        for (int r = 0; r < R; ++r) hs[i][r] = st[(n0 + i) * R + r];
    const T *__restrict Bp = a.Bm + tk.b * a.sB[0] + t0 * a.sB[1] + (tk.g * N + n0) * a.sB[2];
    const T *__restrict Cp = a.Cm + tk.b * a.sC[0] + t0 * a.sC[1] + (tk.g * N + n0) * a.sC[2];
    const int64_t bt = a.sB[1], bc = a.sB[2], ct = a.sC[1], cc = a.sC[2];
    for (int j = 0; j < len; ++j) {
        if (a.ckpt && (t0 + j) % K == 0) {
            V *ck = reinterpret_cast<V *>(tk.ckpt_at((t0 + j) / K, blk)) + n0 * R;
            for (int i = 0; i < NC; ++i)
                for (int r = 0; r < R; ++r) vstore(ck + i * R + r, hs[i][r]);
        }
        const V e = splat<V>(eb[j]);
        V dtx[R], acc[R];
        for (int r = 0; r < R; ++r) {
            dtx[r] = vload<V>(dtxt + j * BW + r * W);
            acc[r] = V{};
        }
#pragma GCC unroll 8
        for (int i = 0; i < NC; ++i) {
            const T Bn = Bp[j * bt + i * bc], Cn = Cp[j * ct + i * cc];
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
                hs[i][r] = e * hs[i][r] + dtx[r] * Bn;
                acc[r] += Cn * hs[i][r];
            }
        }
        for (int r = 0; r < R; ++r) vstore(yt + j * BW + r * W, vload<V>(yt + j * BW + r * W) + acc[r]);
    }
    for (int i = 0; i < NC; ++i)
        for (int r = 0; r < R; ++r) st[(n0 + i) * R + r] = hs[i][r];
}

template <typename T, int R> static void ssd_fwd_task(const SSDArgs<T> &a, int64_t b, int64_t h, int64_t blk0,
                                                      int64_t blk1) {
    using V = typename Vec<T>::V;
    constexpr int W = Vec<T>::W, BW = R * W, TC = SSD_TILE;
    const int64_t L = a.L, N = a.N, NB = (a.P + BW - 1) / BW;
    SSDTask<T> tk{a, b, h, h / (a.H / a.G), BW, NB};
    std::vector<V> st(N * R);
    alignas(64) T dtb[TC], eb[TC];
    std::vector<T> xt(TC * BW), dtxt(TC * BW), yt(TC * BW);
    for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t p0 = blk * BW;
        const int nl = static_cast<int>(std::min<int64_t>(BW, a.P - p0));
        if (a.h0) tk.gather_state(st.data(), a.h0, p0, nl, R);
        else std::fill(st.begin(), st.end(), V{});
        V Dd[R];
        {
            alignas(64) T tmp[BW] = {};
            if (a.Dv) std::memcpy(tmp, a.Dv + h * a.P + p0, sizeof(T) * nl);
            for (int r = 0; r < R; ++r) Dd[r] = vload<V>(tmp + r * W);
        }
        for (int64_t t0 = 0; t0 < L; t0 += TC) {
            const int len = static_cast<int>(std::min<int64_t>(TC, L - t0));
            tk.decays(t0, len, dtb, eb, nullptr);
            tk.load_tile(xt.data(), a.x, a.sx, t0, len, p0, nl);
            for (int j = 0; j < len; ++j)
                for (int r = 0; r < R; ++r) {
                    const V xv = vload<V>(xt.data() + j * BW + r * W);
                    vstore(dtxt.data() + j * BW + r * W, dtb[j] * xv);
                    vstore(yt.data() + j * BW + r * W, Dd[r] * xv);
                }
            int64_t n0 = 0;
            for (; n0 + SSD_NC <= N; n0 += SSD_NC)
                ssd_fwd_rows<T, R, SSD_NC>(a, tk, st.data(), blk, n0, t0, len, dtxt.data(), yt.data(), eb);
            for (; n0 < N; ++n0) ssd_fwd_rows<T, R, 1>(a, tk, st.data(), blk, n0, t0, len, dtxt.data(), yt.data(), eb);
            tk.store_tile(a.y, yt.data(), t0, len, p0, nl);
        }
        if (a.last) tk.scatter_state(a.last, st.data(), p0, nl, R);
    }
}

// Backward buffers of one task, per chunk of K steps and block of BW lanes.
template <typename T> struct SSDBwdBuf {
    using V = typename Vec<T>::V;
    std::vector<V> hb, gx, ga, gxs;  // recomputed states [K + 1][NC][R]; d/d(dt x) [K][R]; <dS, S_{t-1}> [K]; [K]
    std::vector<T> dtb, eb, sgb, xt, gt, dtxt;
};

// The adjoint over one chunk for state rows [n0, n0 + NC) of a block: recompute their states from the checkpoint,
// then walk the steps newest first with their dS rows in registers. Accumulates g = dS B into gx, <dS, S_{t-1}> into
// ga, and adds dB, dC (lane sums) into the task's slot.
template <typename T, int R, int NC> static inline __attribute__((always_inline)) void
ssd_bwd_rows(const SSDArgs<T> &a, const SSDTask<T> &tk, SSDBwdBuf<T> &bf, typename Vec<T>::V *dS, int64_t k,
             int64_t blk, int64_t n0, int64_t t0, int len, T *dBp, T *dCp) {
    using V = typename Vec<T>::V;
    constexpr int W = Vec<T>::W, BW = R * W, NR = NC * R;
    const int64_t N = a.N;
    const T *__restrict Bp = a.Bm + tk.b * a.sB[0] + t0 * a.sB[1] + (tk.g * N + n0) * a.sB[2];
    const T *__restrict Cp = a.Cm + tk.b * a.sC[0] + t0 * a.sC[1] + (tk.g * N + n0) * a.sC[2];
    const int64_t bt = a.sB[1], bc = a.sB[2], ct = a.sC[1], cc = a.sC[2];
    V *__restrict hb = bf.hb.data();
    {
        const V *ck = reinterpret_cast<const V *>(tk.ckpt_at(k, blk)) + n0 * R;
        V hs[NC][R];
        for (int i = 0; i < NC; ++i)
            for (int r = 0; r < R; ++r) hb[i * R + r] = hs[i][r] = vload<V>(ck + i * R + r);
        for (int j = 0; j < len; ++j) {
            const V e = splat<V>(bf.eb[j]);
            for (int i = 0; i < NC; ++i) {
                const T Bn = Bp[j * bt + i * bc];
                for (int r = 0; r < R; ++r) {
                    hs[i][r] = e * hs[i][r] + vload<V>(bf.dtxt.data() + j * BW + r * W) * Bn;
                    hb[(j + 1) * NR + i * R + r] = hs[i][r];
                }
            }
        }
    }
    V ds[NC][R];
    for (int i = 0; i < NC; ++i)
        for (int r = 0; r < R; ++r) ds[i][r] = dS[(n0 + i) * R + r];
    for (int j = len - 1; j >= 0; --j) {
        const V e = splat<V>(bf.eb[j]);
        V dy[R], dtx[R], sx[R], sa = {}, red[2 * NC];
        for (int r = 0; r < R; ++r) {
            dy[r] = vload<V>(bf.gt.data() + j * BW + r * W);
            dtx[r] = vload<V>(bf.dtxt.data() + j * BW + r * W);
            sx[r] = bf.gx[j * R + r];
        }
        const V *__restrict hp = hb + j * NR;
        const V *__restrict hn = hb + (j + 1) * NR;
#pragma GCC unroll 8
        for (int i = 0; i < NC; ++i) {
            const T Bn = Bp[j * bt + i * bc], Cn = Cp[j * ct + i * cc];
            V dB = {}, dC = {};
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
                const V d = ds[i][r] + dy[r] * Cn;  // d loss / d S_t, row n0 + i
                dC += dy[r] * hn[i * R + r];
                dB += d * dtx[r];
                sx[r] += d * Bn;
                sa += d * hp[i * R + r];
                ds[i][r] = e * d;
            }
            red[i] = dB;
            red[NC + i] = dC;
        }
        for (int r = 0; r < R; ++r) bf.gx[j * R + r] = sx[r];
        bf.ga[j] += sa;
        alignas(64) T sums[2 * NC];
        lane_sums<T, 2 * NC>(red, sums);
        for (int i = 0; i < NC; ++i) {
            dBp[(t0 + j) * N + n0 + i] += sums[i];
            dCp[(t0 + j) * N + n0 + i] += sums[NC + i];
        }
    }
    for (int i = 0; i < NC; ++i)
        for (int r = 0; r < R; ++r) dS[(n0 + i) * R + r] = ds[i][r];
}

template <typename T, int R> static void ssd_bwd_task(const SSDArgs<T> &a, int64_t b, int64_t h, int64_t s,
                                                      int64_t blk0, int64_t blk1) {
    using V = typename Vec<T>::V;
    constexpr int W = Vec<T>::W, BW = R * W;
    const int64_t L = a.L, N = a.N, K = a.K, nK = (L + K - 1) / K, NB = (a.P + BW - 1) / BW, nb = blk1 - blk0;
    SSDTask<T> tk{a, b, h, h / (a.H / a.G), BW, NB};
    const int64_t slot = (b * a.H + h) * a.S + s;
    T *dBp = a.dB_part + slot * L * N, *dCp = a.dC_part + slot * L * N, *ddtp = a.ddt_part + slot * L;
    std::fill(dBp, dBp + L * N, T(0));
    std::fill(dCp, dCp + L * N, T(0));
    if (nb <= 0) {
        std::fill(ddtp, ddtp + L, T(0));
        a.dA_part[slot] = T(0);
        return;
    }
    const T Ah = a.A[h];
    std::vector<V> dS(nb * N * R), dD(nb * R, V{}), Dd(nb * R);
    SSDBwdBuf<T> bf;
    const int64_t KP = (K + W - 1) / W * W;  // decays() writes whole vectors
    bf.hb.resize((K + 1) * SSD_NC_BWD * R);
    bf.gx.resize(K * R);
    bf.ga.resize(K);
    bf.gxs.resize(K);
    for (auto *v : {&bf.dtb, &bf.eb, &bf.sgb}) v->resize(KP);
    for (auto *v : {&bf.xt, &bf.gt, &bf.dtxt}) v->resize(K * BW);
    std::vector<T> dxt(K * BW);
    for (int64_t i = 0; i < nb; ++i) {
        const int64_t p0 = (blk0 + i) * BW;
        const int nl = static_cast<int>(std::min<int64_t>(BW, a.P - p0));
        if (a.dlast) tk.gather_state(&dS[i * N * R], a.dlast, p0, nl, R);
        else std::fill(dS.begin() + i * N * R, dS.begin() + (i + 1) * N * R, V{});
        alignas(64) T tmp[BW] = {};
        if (a.Dv) std::memcpy(tmp, a.Dv + h * a.P + p0, sizeof(T) * nl);
        for (int r = 0; r < R; ++r) Dd[i * R + r] = vload<V>(tmp + r * W);
    }
    T dA = 0;
    for (int64_t k = nK - 1; k >= 0; --k) {
        const int64_t t0 = k * K;
        const int len = static_cast<int>(std::min<int64_t>(K, L - t0));
        tk.decays(t0, len, bf.dtb.data(), bf.eb.data(), bf.sgb.data());
        std::fill(bf.ga.begin(), bf.ga.begin() + len, V{});
        std::fill(bf.gxs.begin(), bf.gxs.begin() + len, V{});
        for (int64_t i = 0; i < nb; ++i) {
            const int64_t blk = blk0 + i, p0 = blk * BW;
            const int nl = static_cast<int>(std::min<int64_t>(BW, a.P - p0));
            tk.load_tile(bf.xt.data(), a.x, a.sx, t0, len, p0, nl);
            tk.load_tile(bf.gt.data(), a.dy, nullptr, t0, len, p0, nl);
            for (int j = 0; j < len; ++j)
                for (int r = 0; r < R; ++r)
                    vstore(bf.dtxt.data() + j * BW + r * W, bf.dtb[j] * vload<V>(bf.xt.data() + j * BW + r * W));
            std::fill(bf.gx.begin(), bf.gx.begin() + len * R, V{});
            V *dSi = &dS[i * N * R];
            int64_t n0 = 0;
            for (; n0 + SSD_NC_BWD <= N; n0 += SSD_NC_BWD)
                ssd_bwd_rows<T, R, SSD_NC_BWD>(a, tk, bf, dSi, k, blk, n0, t0, len, dBp, dCp);
            for (; n0 < N; ++n0) ssd_bwd_rows<T, R, 1>(a, tk, bf, dSi, k, blk, n0, t0, len, dBp, dCp);
            for (int j = 0; j < len; ++j) {  // dx = dt g + D dy; lanes of <g, x>; dD
                V gxs = bf.gxs[j];
                for (int r = 0; r < R; ++r) {
                    const V xv = vload<V>(bf.xt.data() + j * BW + r * W), dy = vload<V>(bf.gt.data() + j * BW + r * W);
                    const V g = bf.gx[j * R + r];
                    vstore(dxt.data() + j * BW + r * W, bf.dtb[j] * g + Dd[i * R + r] * dy);
                    gxs += g * xv;
                    dD[i * R + r] += dy * xv;
                }
                bf.gxs[j] = gxs;
            }
            tk.store_tile(a.dx, dxt.data(), t0, len, p0, nl);
        }
        for (int j = 0; j < len; ++j) {  // lanes -> the task's slot
            const T gav = hsum<T>(bf.ga[j]) * bf.eb[j];  // d loss / d (dt A) at step j
            dA += gav * bf.dtb[j];
            const T d = hsum<T>(bf.gxs[j]) + gav * Ah;  // d loss / d dt (after the softplus)
            ddtp[t0 + j] = a.softplus ? d * bf.sgb[j] : d;
        }
    }
    a.dA_part[slot] = dA;
    for (int64_t i = 0; i < nb; ++i) {
        const int64_t p0 = (blk0 + i) * BW;
        const int nl = static_cast<int>(std::min<int64_t>(BW, a.P - p0));
        if (a.dh0) tk.scatter_state(a.dh0, &dS[i * N * R], p0, nl, R);
        alignas(64) T tmp[BW];
        for (int r = 0; r < R; ++r) vstore(tmp + r * W, dD[i * R + r]);
        std::memcpy(a.dD_part + (b * a.H + h) * a.P + p0, tmp, sizeof(T) * nl);
    }
}

// blocks [blk0, blk1) of task range s: block i covers lanes [i BW, min((i + 1) BW, P))
static inline void ssd_block_range(int64_t NB, int64_t S, int64_t s, int64_t &blk0, int64_t &blk1) {
    blk0 = NB * s / S;
    blk1 = NB * (s + 1) / S;
}

template <typename T, int R> static void ssd_run(const SSDArgs<T> &a, int nthreads, bool backward) {
    const int64_t NB = (a.P + R * Vec<T>::W - 1) / (R * Vec<T>::W);
    run_tasks(a.Bt * a.H * a.S, nthreads, [&](int64_t task) {
        const int64_t s = task % a.S, h = (task / a.S) % a.H, b = task / (a.S * a.H);
        int64_t blk0, blk1;
        ssd_block_range(NB, a.S, s, blk0, blk1);
        if (backward) ssd_bwd_task<T, R>(a, b, h, s, blk0, blk1);
        else ssd_fwd_task<T, R>(a, b, h, blk0, blk1);
    });
}

template <typename T> static void ssd_dispatch(const SSDArgs<T> &a, int nthreads, bool backward) {
    switch (ssd_vectors<T>(a.P)) {
        case 4: return ssd_run<T, 4>(a, nthreads, backward);
        case 2: return ssd_run<T, 2>(a, nthreads, backward);
        default: return ssd_run<T, 1>(a, nthreads, backward);
    }
}

}  // namespace

extern "C" {

// lanes per block of the SSD kernel for head dim P (dtype 0 = float32, 1 = float64): the checkpoints' lane padding
int hybridc_ssd_block(int dtype, int64_t P) {
    return dtype == 0 ? ssd_vectors<float>(P) * Vec<float>::W : ssd_vectors<double>(P) * Vec<double>::W;
}

// dtype: 0 = float32, 1 = float64. bias, Dv, h0 may be null; ckpt may be null (no backward will follow); last may be
// null. y = S_t C_t + D x_t with dt = softplus(dt + bias) (softplus != 0) or dt + bias. strides: the element strides
// of x, dt, Bm, Cm (12 values: batch, step, channel each; see SSDArgs), or null when all four are contiguous.
void hybridc_ssd_forward(int dtype, int nthreads, int softplus, const void *x, const void *dt, const void *bias,
                         const void *A, const void *Bm, const void *Cm, const void *Dv, const void *h0, void *y,
                         void *last, void *ckpt, int64_t Bt, int64_t L, int64_t H, int64_t P, int64_t N, int64_t G,
                         int64_t S, int64_t K, const int64_t *strides) {
#define HYBRIDC_SSD_ARGS(T)                                                                                 \
    SSDArgs<T> a{};                                                                                         \
    a.x = (const T *)x; a.dt = (const T *)dt; a.bias = (const T *)bias; a.A = (const T *)A;                 \
    a.Bm = (const T *)Bm; a.Cm = (const T *)Cm; a.Dv = (const T *)Dv; a.softplus = softplus != 0;           \
    a.Bt = Bt; a.L = L; a.H = H; a.P = P; a.N = N; a.G = G; a.S = S; a.K = K;                              \
    ssd_strides(a, strides);
#define HYBRIDC_SSD_FWD(T)                                                                                  \
    {                                                                                                       \
        HYBRIDC_SSD_ARGS(T)                                                                                 \
        a.h0 = (const T *)h0; a.y = (T *)y; a.last = (T *)last; a.ckpt = (T *)ckpt;                         \
        ssd_dispatch(a, nthreads, false);                                                                   \
    }
    if (dtype == 0) HYBRIDC_SSD_FWD(float) else HYBRIDC_SSD_FWD(double)
#undef HYBRIDC_SSD_FWD
}

// ckpt from the forward; dlast and dh0 may be null; strides as in the forward (dy, dx contiguous). Every element of
// the other outputs is written.
void hybridc_ssd_backward(int dtype, int nthreads, int softplus, const void *x, const void *dt, const void *bias,
                          const void *A, const void *Bm, const void *Cm, const void *Dv, const void *ckpt,
                          const void *dy, const void *dlast, void *dx, void *ddt_part, void *dA_part, void *dB_part,
                          void *dC_part, void *dD_part, void *dh0, int64_t Bt, int64_t L, int64_t H, int64_t P,
                          int64_t N, int64_t G, int64_t S, int64_t K, const int64_t *strides) {
#define HYBRIDC_SSD_BWD(T)                                                                                  \
    {                                                                                                       \
        HYBRIDC_SSD_ARGS(T)                                                                                 \
        a.ckpt = (T *)ckpt; a.dy = (const T *)dy; a.dlast = (const T *)dlast; a.dx = (T *)dx;               \
        a.ddt_part = (T *)ddt_part; a.dA_part = (T *)dA_part; a.dB_part = (T *)dB_part;                     \
        a.dC_part = (T *)dC_part; a.dD_part = (T *)dD_part; a.dh0 = (T *)dh0;                               \
        ssd_dispatch(a, nthreads, true);                                                                    \
    }
    if (dtype == 0) HYBRIDC_SSD_BWD(float) else HYBRIDC_SSD_BWD(double)
#undef HYBRIDC_SSD_BWD
#undef HYBRIDC_SSD_ARGS
}

}  // extern "C"
