// Fused gated group RMSNorm (Mamba-2's output norm), forward and backward, one row (a token's E channels) at a time,
// groups of gs channels normalised separately:
//     mode 1 (norm after the gate, Mamba-2's default):  h = y silu(z);  out = w h r,  r = (mean_g h^2 + eps)^-1/2
//     mode 2 (norm_before_gate):                         h = y;          out = w h r silu(z)
//     mode 0 (no norm, the layer's out_norm=false):      out = y silu(z)
// Reference: mamba_ssm's RMSNormGated (mamba_ssm/ops/triton/layernorm_gated.py); our oracle is hybridc_torch's
// ops/rms_norm_gated/naive.py.
//
// Why: in torch the norm is ~8 elementwise passes forward (silu, mul, pow, mean, rsqrt, mul, mul) and ~15 backward
// over [rows, E]; here one pass forward and one backward, each reading a row once: sweep 1 keeps what sweep 2 needs
// (forward: h and the gate; backward: sigmoid(z), h, dn) in a row buffer in L1. At the Mamba-2 layer's shape
// ([4096, 512], z a slice of a [4096, 1160] projection, 1 thread): forward ~2.6 ms, backward ~3.6-3.9 ms.
//
// Backward, per row and group (n = h r, dn = dout w (mode 1) or dout w silu(z) (mode 2)):
//     dh = r (dn - n mean_g(dn n))     (mean_g(dn n) = r sum_g(dn h) / gs: one sweep accumulates sum h^2 and
//                                       sum dn h, the second writes)
//     mode 1: dy = dh silu(z), dz = dh y silu'(z), dw += dout n;   mode 2: dy = dh, dz = dout w n silu'(z),
//     dw += dout n silu(z);  mode 0: dy = dout silu(z), dz = dout y silu'(z)
// with silu'(z) = s (1 + z (1 - s)), s = sigmoid(z).
//
// Work split: tasks over ranges of rows (S of them, chosen by the caller); each task sums its rows' dw into its own
// slot of dw_part [S, E] (summed by the caller): no races. Vectorised across the channels of a group (partial last
// vectors when gs is not a multiple of W).
//
// Layouts (scalar_t = float or double): y [rows, E] with row stride sy, z with row stride sz, dz with row stride sdz
// (channel stride 1 for all: the layer passes z as its projection's slice and points dz into the projection's
// gradient); out, dout, dy [rows, E] contiguous; w [E] (unused in mode 0).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vec_math.h"

namespace {

template <typename T> struct NormArgs {
    const T *y, *z, *w, *dout;
    T *out, *dy, *dz, *dw_part;
    int64_t rows, E, gs, sy, sz, sdz, S;
    double eps;
    int mode;
};

template <class V, typename T> static inline __attribute__((always_inline)) V nload(const T *p, int64_t n) {
    if (n >= Vec<T>::W) return vload<V>(p);
    V v = {};
    std::memcpy(&v, p, sizeof(T) * n);
    return v;
}
template <class V, typename T> static inline __attribute__((always_inline)) void nstore(T *p, V v, int64_t n) {
    if (n >= Vec<T>::W) return vstore(p, v);
    std::memcpy(p, &v, sizeof(T) * n);
}
template <class V, typename T> static inline __attribute__((always_inline)) T hsum(V v) {
    T s = 0;
    for (int l = 0; l < Vec<T>::W; ++l) s += v[l];
    return s;
}

// buf: 2 E scratch values (h, silu(z)) of this task
template <typename T> static void norm_fwd_row(const NormArgs<T> &a, int64_t row, T *buf) {
    using V = typename Vec<T>::V;
    constexpr int W = Vec<T>::W;
    const T *y = a.y + row * a.sy, *z = a.z + row * a.sz;
    T *out = a.out + row * a.E, *hb = buf, *gb = buf + a.E;
    for (int64_t g0 = 0; g0 < a.E; g0 += a.gs) {
        V ss = {};
        for (int64_t c = g0; c < g0 + a.gs; c += W) {  // sweep 1: h, the gate, sum h^2
            const int64_t n = g0 + a.gs - c;
            const V zv = nload<V>(z + c, n), yv = nload<V>(y + c, n);
            const V gate = zv * vsigmoid_rcp(zv);
            const V h = a.mode == 2 ? yv : yv * gate;
            ss += h * h;
            nstore(hb + c, h, n);
            nstore(gb + c, gate, n);
        }
        if (a.mode == 0) {
            for (int64_t c = g0; c < g0 + a.gs; c += W) nstore(out + c, nload<V>(hb + c, g0 + a.gs - c), g0 + a.gs - c);
            continue;
        }
        const T r = T(1) / std::sqrt(hsum<V, T>(ss) / T(a.gs) + T(a.eps));
        for (int64_t c = g0; c < g0 + a.gs; c += W) {  // sweep 2: out
            const int64_t n = g0 + a.gs - c;
            V o = nload<V>(hb + c, n) * r * nload<V>(a.w + c, n);
            if (a.mode == 2) o = o * nload<V>(gb + c, n);
            nstore(out + c, o, n);
        }
    }
}

// buf: 3 E scratch values (sigmoid(z), h, dn) of this task; dw: this task's slot [E]
template <typename T> static void norm_bwd_row(const NormArgs<T> &a, int64_t row, T *buf, T *dw) {
    using V = typename Vec<T>::V;
    constexpr int W = Vec<T>::W;
    const T *y = a.y + row * a.sy, *z = a.z + row * a.sz, *dout = a.dout + row * a.E;
    T *dy = a.dy + row * a.E, *dz = a.dz + row * a.sdz;
    T *sg = buf, *hb = buf + a.E, *dnb = buf + 2 * a.E;
    for (int64_t g0 = 0; g0 < a.E; g0 += a.gs) {
        if (a.mode == 0) {
            for (int64_t c = g0; c < g0 + a.gs; c += W) {
                const int64_t n = g0 + a.gs - c;
                const V zv = nload<V>(z + c, n), s = vsigmoid_rcp(zv), d = nload<V>(dout + c, n);
                nstore(dy + c, d * zv * s, n);
                nstore(dz + c, d * nload<V>(y + c, n) * s * (T(1) + zv * (T(1) - s)), n);
            }
            continue;
        }
        V ss = {}, sdh = {};
        for (int64_t c = g0; c < g0 + a.gs; c += W) {  // sweep 1: h, dn, sum h^2, sum dn h
            const int64_t n = g0 + a.gs - c;
            const V zv = nload<V>(z + c, n), s = vsigmoid_rcp(zv), yv = nload<V>(y + c, n);
            const V wd = nload<V>(dout + c, n) * nload<V>(a.w + c, n);
            const V h = a.mode == 1 ? yv * zv * s : yv;
            const V dn = a.mode == 1 ? wd : wd * zv * s;
            ss += h * h;
            sdh += dn * h;
            nstore(sg + c, s, n);
            nstore(hb + c, h, n);
            nstore(dnb + c, dn, n);
        }
        const T r = T(1) / std::sqrt(hsum<V, T>(ss) / T(a.gs) + T(a.eps));
        const T k = r * r * r * hsum<V, T>(sdh) / T(a.gs);  // dh = r dn - h (r^3 sum(dn h) / gs)
        for (int64_t c = g0; c < g0 + a.gs; c += W) {  // sweep 2: dy, dz, dw
            const int64_t n = g0 + a.gs - c;
            const V zv = nload<V>(z + c, n), s = nload<V>(sg + c, n), h = nload<V>(hb + c, n);
            const V dn = nload<V>(dnb + c, n), d = nload<V>(dout + c, n);
            const V dh = dn * r - h * k;
            const V dsilu = s * (T(1) + zv * (T(1) - s));
            V dwv = nload<V>(dw + c, n);
            if (a.mode == 1) {
                const V gate = zv * s;
                nstore(dy + c, dh * gate, n);
                nstore(dz + c, dh * nload<V>(y + c, n) * dsilu, n);
                dwv += d * h * r;
            } else {
                nstore(dy + c, dh, n);
                nstore(dz + c, d * nload<V>(a.w + c, n) * h * r * dsilu, n);
                dwv += d * h * r * zv * s;
            }
            nstore(dw + c, dwv, n);
        }
    }
}

template <typename T> static void norm_run(const NormArgs<T> &a, int nthreads, bool backward) {
    run_tasks(a.S, nthreads, [&](int64_t s) {
        const int64_t r0 = a.rows * s / a.S, r1 = a.rows * (s + 1) / a.S;
        std::vector<T> buf(3 * a.E + Vec<T>::W);
        if (!backward) {
            for (int64_t row = r0; row < r1; ++row) norm_fwd_row(a, row, buf.data());
            return;
        }
        T *dw = a.dw_part + s * a.E;
        std::fill(dw, dw + a.E, T(0));
        for (int64_t row = r0; row < r1; ++row) norm_bwd_row(a, row, buf.data(), dw);
    });
}

}  // namespace

extern "C" {

// dtype: 0 = float32, 1 = float64; mode: 0 gate only, 1 norm(y silu(z)) w, 2 norm(y) w silu(z); S tasks.
void hybridc_gnorm_forward(int dtype, int nthreads, int mode, const void *y, const void *z, const void *w, void *out,
                           int64_t rows, int64_t E, int64_t gs, double eps, int64_t sy, int64_t sz, int64_t S) {
#define HYBRIDC_GNORM_ARGS(T)                                                                                 \
    NormArgs<T> a{};                                                                                          \
    a.y = (const T *)y; a.z = (const T *)z; a.w = (const T *)w; a.rows = rows; a.E = E; a.gs = gs;            \
    a.eps = eps; a.sy = sy; a.sz = sz; a.S = std::max<int64_t>(1, S); a.mode = mode;
#define HYBRIDC_GNORM_FWD(T)                                                                                  \
    {                                                                                                         \
        HYBRIDC_GNORM_ARGS(T)                                                                                 \
        a.out = (T *)out;                                                                                     \
        norm_run(a, nthreads, false);                                                                         \
    }
    if (dtype == 0) HYBRIDC_GNORM_FWD(float) else HYBRIDC_GNORM_FWD(double)
#undef HYBRIDC_GNORM_FWD
}

// dout, dy contiguous; dz row stride sdz; dw_part [S, E] (mode 0: unused, may be null).
void hybridc_gnorm_backward(int dtype, int nthreads, int mode, const void *y, const void *z, const void *w,
                            const void *dout, void *dy, void *dz, void *dw_part, int64_t rows, int64_t E, int64_t gs,
                            double eps, int64_t sy, int64_t sz, int64_t sdz, int64_t S) {
#define HYBRIDC_GNORM_BWD(T)                                                                                  \
    {                                                                                                         \
        HYBRIDC_GNORM_ARGS(T)                                                                                 \
        std::vector<T> unused(mode == 0 && !dw_part ? a.S * E : 0);                                           \
        a.dout = (const T *)dout; a.dy = (T *)dy; a.dz = (T *)dz; a.sdz = sdz;                                \
        a.dw_part = dw_part ? (T *)dw_part : unused.data();                                                   \
        norm_run(a, nthreads, true);                                                                          \
    }
    if (dtype == 0) HYBRIDC_GNORM_BWD(float) else HYBRIDC_GNORM_BWD(double)
#undef HYBRIDC_GNORM_BWD
#undef HYBRIDC_GNORM_ARGS
}

}  // extern "C"
