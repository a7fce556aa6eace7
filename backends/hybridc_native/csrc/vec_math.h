// Shared vector math and the thread pool of hybridc's CPU kernels (selective_scan.cpp, linear_recurrence.cpp,
// delta_rule.cpp; built together as one translation unit by scan_kernels.cpp).
//
// Vectors are W lanes of T (W = 8 fp32 lanes with AVX2, 16 with AVX-512; 4/8 for fp64), written with GCC/Clang
// vector extensions, so the same code compiles for any target (SSE2-only x86 or NEON get the same W-lane code split
// into narrower instructions; the only intrinsics are the two optional min/max helpers).
//
// Math: exp is a vectorised range reduction + degree-6 polynomial (max relative error 7.7e-8, ~1.3 ulp, measured
// against double exp over [-88, 88]; arguments below -88 give exactly 0; clamped at 88); softplus uses a vectorised
// log (max relative error 3e-7). fp64 uses std::exp / log1p per lane.
//
// Threads: run_tasks pulls tasks from an atomic counter with `nthreads` std::threads (no OpenMP runtime, so no
// second thread pool next to torch's).
//
// Everything here has internal linkage (an anonymous namespace; static inline helpers, the hot ones always_inline),
// so several sources may include this header and still link, and every caller inlines the same code.

#pragma once

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

// sigmoid with the reciprocal from the hardware estimate and two Newton steps where there is one (fp32 AVX-512:
// rel. error ~1e-7, without a division's ~10-20 cycle throughput); elsewhere (and fp64) vsigmoid
static inline __attribute__((always_inline)) VF vsigmoid_rcp(VF u) {
#if HYBRIDC_VBYTES == 64 && defined(__AVX512F__)
    const VF d = 1.0f + vexp(-u);
    VF r = (VF)_mm512_rcp14_ps((__m512)d);
    r = r * (2.0f - d * r);
    return r * (2.0f - d * r);
#else
    return vsigmoid<float>(u);
#endif
}
static inline VD vsigmoid_rcp(VD u) { return vsigmoid<double>(u); }

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

}  // namespace
