// Gated delta rule (Gated DeltaNet; the plain delta rule is g = null), sequential and fused, forward and backward.
// Paper: Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule" (2024,
// arXiv:2412.06464); the delta rule: Yang et al., "Parallelizing Linear Transformers with the Delta Rule over
// Sequence Length" (2024, arXiv:2406.06484). Reference implementation: fla-org/flash-linear-attention's
// naive_recurrent_gated_delta_rule. Per (batch, head) task:
//     a = exp(g_t);  p = S^T k_t;  r = v_t - a p;  u = beta_t r;  S = a S + k_t u^T;  o_t = S^T (scale q_t)
// The [K, V] state lives in L1/L2; every loop runs along V (contiguous), reductions over K are vertical. The
// forward stores the state entering every chunk of CK steps when a backward follows. The backward walks the
// chunks in reverse, recomputes the chunk's states (CK + 1 of them) and r from the checkpoint, then runs the adjoint:
//     dS += scale q do^T;  dq = scale S_t do;  du = dS^T k;  dk = dS u;  dbeta = du . r;  dv = beta du;
//     dp = -a beta du;  dS' = dS + k dp^T;  dk += S_{t-1} dp... (with S' = a S_{t-1}: dk += a S_{t-1}^T-row . dp)
//     dg = a <dS', S_{t-1}>;  dS = a dS'
// Layouts: q, k [Bt, L, H, K]; v, out, dout [Bt, L, H, V]; g, beta [Bt, L, H]; h0, last [Bt, H, K, V];
// ckpt [Bt, H, nC, K, V] (nC = ceil(L / CK)). Optional pointers are null when absent.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "vec_math.h"

namespace {

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
