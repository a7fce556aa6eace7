// Fused one-token decoding steps of the Mamba-1 and Mamba-2 mixers (fp32), the recurrent states updated in place:
// everything between the in_proj and out_proj matmuls in one call, so a layer's step is three calls instead of the
// ~30 small framework ops of the pure step (each ~5-10 us of dispatch and allocation at these sizes, where the
// arithmetic of a step is a few microseconds).
//
// Mamba-1 (Gu & Dao 2023, Alg. 2; the step of mamba_ssm's Mamba.step / selective_state_update), per row b:
//     x, z = xz[:E], xz[E:]                                    (in_proj output, row stride xz_stride)
//     u    = silu(sum_j w[e, j] window[e, j] + conv_b[e])       window = [conv_state[e, :], x[e]]; the state shifts
//     dbl  = xproj u  -> dt_in (R), B (N), C (N)                (optional RMSNorms of the three: Jamba / FalconMamba)
//     dt   = softplus(dtproj dt_in + dt_bias)                    (E)
//     S    = exp(dt A) S + (dt u) B;   y = S C + D u;   y *= silu(z)     A = -exp(A_log)  (E, N), given
// Mamba-2 (Dao & Gu 2024, Sec. 7; mamba_ssm's Mamba2.step), per row b, zxbcdt = [z (E), xBC (X), dt (H)]:
//     xBC  = silu(conv step of xBC)  -> x (H, P), B (G, N), C (G, N)      X = E + 2 G N
//     dt   = clamp(softplus(dt + dt_bias), dt_min, dt_max);  a = exp(dt A_h),  A = -exp(A_log)  (H)
//     S    = a S + (dt x) B_g^T;   y = S C_g + D_h x                       head h reads group h / (H / G)
//     out  = norm_w * rmsnorm_groupwise(y * silu(z))   (norm_before_gate: norm_w * rmsnorm(y) * silu(z); no norm:
//            y * silu(z))
// The oracles are the pure steps (hybridc_torch ops/selective_scan/naive.py selective_scan_step, ops/ssd/naive.py
// ssd_step and the layers' step). Vectorised over the state dim N (Mamba-1: one exp per state element) and over
// the head dim's N-rows (Mamba-2: one exp per head); single-threaded (a step is microseconds; a thread launch is
// tens of them).
//
// Layouts (contiguous fp32 unless a stride is given): conv_state [Bt, C, K-1] (C channels: E, or X), conv_w [C, K],
// ssm [Bt, E, N] (Mamba-1) or [Bt, H, P, N] (Mamba-2), y [Bt, E]. Optional pointers are null when absent.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vec_math.h"

// The lanes past the first `n` of a shuffle mask (their values are never read: only lane 0 of the tree is).
#if HYBRIDC_VBYTES == 64
#define HYBRIDC_DECODE_REST(n) HYBRIDC_DECODE_REST_##n
#define HYBRIDC_DECODE_REST_8 , 8, 9, 10, 11, 12, 13, 14, 15
#define HYBRIDC_DECODE_REST_4 , 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
#elif HYBRIDC_VBYTES == 32
#define HYBRIDC_DECODE_REST(n) HYBRIDC_DECODE_REST_##n
#define HYBRIDC_DECODE_REST_8
#define HYBRIDC_DECODE_REST_4 , 4, 5, 6, 7
#else
#define HYBRIDC_DECODE_REST(n)
#endif

namespace {
namespace decode {  // (a unity build: these names stay out of the other kernels' way)

constexpr int SW = Vec<float>::W;

// the sum of a vector's lanes by a shuffle tree (log2 W dependent adds, not W)
static inline __attribute__((always_inline)) float hsum(VF v) {
#if HYBRIDC_VBYTES == 64
    v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
#endif
#if HYBRIDC_VBYTES >= 32
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3 HYBRIDC_DECODE_REST(8));
#endif
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1 HYBRIDC_DECODE_REST(4));
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2 HYBRIDC_DECODE_REST(4));
    return v[0];
}

static inline float dot(const float *a, const float *b, int64_t n) {
    VF acc = splat<VF>(0.0f);
    int64_t i = 0;
    for (; i + SW <= n; i += SW) acc += vload<VF>(a + i) * vload<VF>(b + i);
    float s = hsum(acc);
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

// y[0, M) = W x + bias (W [M, K] row-major; bias may be null): the in/out projections of a batch-1 step, four rows
// at a time (four accumulators sharing each load of x; the weights stream from memory once)
static void gemv(const float *W, const float *x, const float *bias, float *y, int64_t M, int64_t K) {
    int64_t j = 0;
    const int64_t Kv = K / SW * SW;
    for (; j + 4 <= M; j += 4) {
        const float *w0 = W + j * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        VF a0 = splat<VF>(0.0f), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < Kv; k += SW) {
            const VF xv = vload<VF>(x + k);
            a0 += vload<VF>(w0 + k) * xv;
            a1 += vload<VF>(w1 + k) * xv;
            a2 += vload<VF>(w2 + k) * xv;
            a3 += vload<VF>(w3 + k) * xv;
        }
        float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
        for (int64_t k = Kv; k < K; ++k) {
            s0 += w0[k] * x[k]; s1 += w1[k] * x[k]; s2 += w2[k] * x[k]; s3 += w3[k] * x[k];
        }
        y[j] = s0; y[j + 1] = s1; y[j + 2] = s2; y[j + 3] = s3;
    }
    for (; j < M; ++j) y[j] = dot(W + j * K, x, K);
    if (bias)
        for (int64_t i = 0; i < M; ++i) y[i] += bias[i];
}

// The optional in/out projections around a step (batch-1 decoding: one call per layer instead of three).
struct Proj {
    const float *x, *in_w, *in_b, *out_w, *out_b;
    float *out;
    int64_t D;
};

static inline int64_t padded(int64_t n) { return (n + SW - 1) / SW * SW; }

// v[0, n) = silu(v) (n a multiple of SW: the callers' buffers are padded)
static void silu_padded(float *v, int64_t n) {
    for (int64_t i = 0; i < n; i += SW) {
        const VF x = vload<VF>(v + i);
        vstore(v + i, x / (1.0f + vexp(-x)));
    }
}

// v[0, n) = softplus(v) as torch's (threshold 20), n a multiple of SW
static void softplus_padded(float *v, int64_t n) {
    for (int64_t i = 0; i < n; i += SW) {
        VF sp, grad;
        vsoftplus(vload<VF>(v + i), sp, grad);
        vstore(v + i, sp);
    }
}

static inline float softplus1(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

// v[0, n) = v * rsqrt(mean(v^2) + eps) * w (w null: no weight), as torch's RMSNorm in fp32
static void rmsnorm_inplace(float *v, int64_t n, const float *w, float eps) {
    const float r = 1.0f / std::sqrt(dot(v, v, n) / float(n) + eps);
    for (int64_t i = 0; i < n; ++i) v[i] = w ? v[i] * r * w[i] : v[i] * r;
}

// One causal depthwise conv step per channel: out[c] = sum_j w[c, j] window[c, j] + bias[c], window =
// [state[c, :], x[c]]; the state (K-1 per channel) shifts by one, in place. KF > 0: the width known at compile time
// (straight-line code per channel, ~4x faster than the loops at K = 4).
template <int KF>
static void conv_step_k(const float *x, float *state, const float *w, const float *bias, int64_t C, int64_t K,
                        float *out) {
    const int64_t KK = KF > 0 ? KF : K, k1 = KK - 1;
    for (int64_t c = 0; c < C; ++c) {
        float *s = state + c * k1;
        const float *wc = w + c * KK;
        float acc = 0.0f;
#pragma GCC unroll 8
        for (int64_t j = 0; j < k1; ++j) acc += wc[j] * s[j];
        acc += wc[k1] * x[c];
#pragma GCC unroll 8
        for (int64_t j = 0; j + 1 < k1; ++j) s[j] = s[j + 1];
        if (k1 > 0) s[k1 - 1] = x[c];
        out[c] = bias ? acc + bias[c] : acc;
    }
}

static void conv_step(const float *x, float *state, const float *w, const float *bias, int64_t C, int64_t K,
                      float *out) {
    switch (K) {
        case 2: conv_step_k<2>(x, state, w, bias, C, K, out); break;
        case 3: conv_step_k<3>(x, state, w, bias, C, K, out); break;
        case 4: conv_step_k<4>(x, state, w, bias, C, K, out); break;
        default: conv_step_k<0>(x, state, w, bias, C, K, out);
    }
}

struct MambaStep {
    const float *xz, *conv_w, *conv_b, *xproj, *dtproj_t, *dt_bias, *dt_norm_w, *b_norm_w, *c_norm_w, *A, *Dv;
    float *conv, *ssm, *y;
    int64_t Bt, E, N, R, K, xz_stride;
    int inner_norm;
    float eps;
};

// Per row: conv, silu, x_proj, norms, dt (rows of U, DT, DBL, GATE); then per channel e the state update of every
// row.
static void mamba_step(MambaStep a, const Proj &pr) {
    const int64_t E = a.E, N = a.N, R = a.R, J = R + 2 * N, Ep = padded(E);
    std::vector<float> U(a.Bt * Ep, 0.0f), DT(a.Bt * Ep, 0.0f), GATE(a.Bt * Ep, 0.0f), DBL(a.Bt * J), XZ, Y;
    if (pr.in_w) {  // xz = in_proj(x) here
        XZ.resize(a.Bt * 2 * E);
        for (int64_t b = 0; b < a.Bt; ++b) gemv(pr.in_w, pr.x + b * pr.D, pr.in_b, XZ.data() + b * 2 * E, 2 * E, pr.D);
        a.xz = XZ.data(), a.xz_stride = 2 * E;
    }
    if (pr.out_w) {  // y into a buffer, then out = out_proj(y)
        Y.resize(a.Bt * E);
        a.y = Y.data();
    }
    for (int64_t b = 0; b < a.Bt; ++b) {
        const float *x = a.xz + b * a.xz_stride, *z = x + E;
        float *u = U.data() + b * Ep, *dt = DT.data() + b * Ep, *g = GATE.data() + b * Ep, *dbl = DBL.data() + b * J;
        conv_step(x, a.conv + b * E * (a.K - 1), a.conv_w, a.conv_b, E, a.K, u);
        silu_padded(u, Ep);
        gemv(a.xproj, u, nullptr, dbl, J, E);  // x_proj
        if (a.inner_norm) {
            rmsnorm_inplace(dbl, R, a.dt_norm_w, a.eps);
            rmsnorm_inplace(dbl + R, N, a.b_norm_w, a.eps);
            rmsnorm_inplace(dbl + R + N, N, a.c_norm_w, a.eps);
        }
        std::memcpy(dt, a.dt_bias, E * sizeof(float));
        for (int64_t r = 0; r < R; ++r) {  // dt += dt_proj dt_in, a column of dt_proj (a row of its transpose) each
            const float *w = a.dtproj_t + r * E, c = dbl[r];
            int64_t e = 0;
            for (; e + SW <= E; e += SW) vstore(dt + e, vload<VF>(dt + e) + c * vload<VF>(w + e));
            for (; e < E; ++e) dt[e] += c * w[e];
        }
        softplus_padded(dt, Ep);
        std::memcpy(g, z, E * sizeof(float));
        silu_padded(g, Ep);
    }
    for (int64_t e = 0; e < E; ++e) {
        const float *Ae = a.A + e * N;
        for (int64_t b = 0; b < a.Bt; ++b) {
            const float d = DT[b * Ep + e], ue = U[b * Ep + e], du = d * ue;
            const float *Bv = DBL.data() + b * J + R, *Cv = Bv + N;
            float *s = a.ssm + (b * E + e) * N;
            VF acc = splat<VF>(0.0f);
            int64_t n = 0;
            for (; n + SW <= N; n += SW) {
                const VF st = vexp(vload<VF>(Ae + n) * d) * vload<VF>(s + n) + du * vload<VF>(Bv + n);
                vstore(s + n, st);
                acc += st * vload<VF>(Cv + n);
            }
            float ye = hsum(acc);
            for (; n < N; ++n) {
                const float st = std::exp(Ae[n] * d) * s[n] + du * Bv[n];
                s[n] = st;
                ye += st * Cv[n];
            }
            if (a.Dv) ye += a.Dv[e] * ue;
            a.y[b * E + e] = ye * GATE[b * Ep + e];
        }
    }
    if (pr.out_w)
        for (int64_t b = 0; b < a.Bt; ++b) gemv(pr.out_w, a.y + b * E, pr.out_b, pr.out + b * pr.D, pr.D, E);
}

struct Mamba2Step {
    const float *zxbcdt, *conv_w, *conv_b, *dt_bias, *A_log, *Dv, *norm_w;
    float *conv, *ssm, *y;
    int64_t Bt, H, P, G, N, K, stride, group_size;
    float dt_min, dt_max, eps;
    int norm, norm_before_gate;
};

static void mamba2_step(Mamba2Step a, const Proj &pr) {
    const int64_t E = a.H * a.P, GN = a.G * a.N, X = E + 2 * GN, P = a.P, N = a.N, hpg = a.H / a.G;
    std::vector<float> xbc(padded(X), 0.0f), gate(padded(E), 0.0f), ZX, Y;
    if (pr.in_w) {
        const int64_t W_ = E + X + a.H;
        ZX.resize(a.Bt * W_);
        for (int64_t b = 0; b < a.Bt; ++b) gemv(pr.in_w, pr.x + b * pr.D, pr.in_b, ZX.data() + b * W_, W_, pr.D);
        a.zxbcdt = ZX.data(), a.stride = W_;
    }
    if (pr.out_w) {
        Y.resize(a.Bt * E);
        a.y = Y.data();
    }
    for (int64_t b = 0; b < a.Bt; ++b) {
        const float *z = a.zxbcdt + b * a.stride, *dtr = z + E + X;
        conv_step(z + E, a.conv + b * X * (a.K - 1), a.conv_w, a.conv_b, X, a.K, xbc.data());
        silu_padded(xbc.data(), padded(X));
        const float *xs = xbc.data(), *Bm = xs + E, *Cm = Bm + GN;
        float *yb = a.y + b * E;
        for (int64_t h = 0; h < a.H; ++h) {
            float d = softplus1(dtr[h] + (a.dt_bias ? a.dt_bias[h] : 0.0f));
            d = std::min(std::max(d, a.dt_min), a.dt_max);
            const float decay = std::exp(d * -std::exp(a.A_log[h]));
            const float *Bg = Bm + (h / hpg) * N, *Cg = Cm + (h / hpg) * N;
            float *S = a.ssm + ((b * a.H + h) * P) * N;
            for (int64_t p = 0; p < P; ++p) {
                const float xv = xs[h * P + p], dx = d * xv;
                float *s = S + p * N;
                VF acc = splat<VF>(0.0f);
                int64_t n = 0;
                for (; n + SW <= N; n += SW) {
                    const VF st = decay * vload<VF>(s + n) + dx * vload<VF>(Bg + n);
                    vstore(s + n, st);
                    acc += st * vload<VF>(Cg + n);
                }
                float yv = hsum(acc);
                for (; n < N; ++n) {
                    const float st = decay * s[n] + dx * Bg[n];
                    s[n] = st;
                    yv += st * Cg[n];
                }
                yb[h * P + p] = a.Dv ? yv + a.Dv[h] * xv : yv;
            }
        }
        std::memcpy(gate.data(), z, E * sizeof(float));
        silu_padded(gate.data(), padded(E));
        if (!a.norm) {
            for (int64_t e = 0; e < E; ++e) yb[e] *= gate[e];
            continue;
        }
        for (int64_t g0 = 0; g0 < E; g0 += a.group_size) {
            float *v = yb + g0;
            const float *gt = gate.data() + g0;
            if (!a.norm_before_gate)
                for (int64_t i = 0; i < a.group_size; ++i) v[i] *= gt[i];
            rmsnorm_inplace(v, a.group_size, a.norm_w + g0, a.eps);
            if (a.norm_before_gate)
                for (int64_t i = 0; i < a.group_size; ++i) v[i] *= gt[i];
        }
    }
    if (pr.out_w)
        for (int64_t b = 0; b < a.Bt; ++b) gemv(pr.out_w, a.y + b * E, pr.out_b, pr.out + b * pr.D, pr.D, E);
}

}  // namespace decode
}  // namespace

extern "C" {

// Both steps take optional projections (x, in_w, in_b, out_w, out_b, out, D): with in_w, the in_proj output is
// in_w x + in_b computed here from x (Bt, D) (xz / zxbcdt then unused); with out_w, out (Bt, D) = out_w y + out_b
// is written instead of y. The torch layers pass them at batch 1 (a GEMV streaming the weights once; torch's GEMMs
// at larger batches).

// Mamba-1 step, fp32, in place on conv (Bt, E, K-1) and ssm (Bt, E, N); y (Bt, E). A = -exp(A_log) (E, N);
// dtproj_t: dt_proj's weight transposed (R, E). conv_b, Dv and the three norm weights may be null; inner_norm != 0
// applies the RMSNorms (eps) to dt_in, B and C (weights null: weightless). Projections (optional, proj_* below).
void hybridc_step_mamba(const void *xz, int64_t xz_stride, void *conv, const void *conv_w, const void *conv_b,
                        const void *xproj, const void *dtproj_t, const void *dt_bias, int inner_norm,
                        const void *dt_norm_w, const void *b_norm_w, const void *c_norm_w, double eps,
                        const void *A, const void *Dv, void *ssm, void *y, int64_t Bt, int64_t E, int64_t N,
                        int64_t R, int64_t K, const void *x, const void *in_w, const void *in_b,
                        const void *out_w, const void *out_b, void *out, int64_t D) {
    decode::MambaStep a{};
    a.xz = (const float *)xz; a.conv_w = (const float *)conv_w; a.conv_b = (const float *)conv_b;
    a.xproj = (const float *)xproj; a.dtproj_t = (const float *)dtproj_t; a.dt_bias = (const float *)dt_bias;
    a.dt_norm_w = (const float *)dt_norm_w; a.b_norm_w = (const float *)b_norm_w; a.c_norm_w = (const float *)c_norm_w;
    a.A = (const float *)A; a.Dv = (const float *)Dv;
    a.conv = (float *)conv; a.ssm = (float *)ssm; a.y = (float *)y;
    a.Bt = Bt; a.E = E; a.N = N; a.R = R; a.K = K; a.xz_stride = xz_stride;
    a.inner_norm = inner_norm; a.eps = (float)eps;
    decode::mamba_step(a, decode::Proj{(const float *)x, (const float *)in_w, (const float *)in_b,
                                       (const float *)out_w, (const float *)out_b, (float *)out, D});
}

// Mamba-2 step, fp32, in place on conv (Bt, X, K-1) and ssm (Bt, H, P, N); y (Bt, H P) gated (and normed when
// norm_w is given: groups of group_size channels, eps, norm_before_gate). dt_bias, conv_b, Dv may be null.
void hybridc_step_mamba2(const void *zxbcdt, int64_t stride, void *conv, const void *conv_w, const void *conv_b,
                         const void *dt_bias, double dt_min, double dt_max, const void *A_log, const void *Dv,
                         const void *norm_w, int64_t group_size, double eps, int norm_before_gate, void *ssm,
                         void *y, int64_t Bt, int64_t H, int64_t P, int64_t G, int64_t N, int64_t K, const void *x,
                         const void *in_w, const void *in_b, const void *out_w, const void *out_b, void *out,
                         int64_t D) {
    decode::Mamba2Step a{};
    a.zxbcdt = (const float *)zxbcdt; a.conv_w = (const float *)conv_w; a.conv_b = (const float *)conv_b;
    a.dt_bias = (const float *)dt_bias; a.A_log = (const float *)A_log; a.Dv = (const float *)Dv;
    a.norm_w = (const float *)norm_w; a.conv = (float *)conv; a.ssm = (float *)ssm; a.y = (float *)y;
    a.Bt = Bt; a.H = H; a.P = P; a.G = G; a.N = N; a.K = K; a.stride = stride; a.group_size = group_size;
    a.dt_min = (float)dt_min; a.dt_max = (float)dt_max; a.eps = (float)eps;
    a.norm = norm_w != nullptr; a.norm_before_gate = norm_before_gate;
    decode::mamba2_step(a, decode::Proj{(const float *)x, (const float *)in_w, (const float *)in_b,
                                        (const float *)out_w, (const float *)out_b, (float *)out, D});
}

}  // extern "C"
