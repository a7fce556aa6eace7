// XLA FFI handlers (CPU custom calls) for the kernels of scan_kernels.cpp, so JAX runs the same fused selective scan,
// linear recurrence, delta rule and SSD as torch, on XLA's own buffers (no copies, no host callback).
//
// Built by hybridc_jax.kernels.cpu_ffi against the XLA FFI headers jaxlib ships (jax.ffi.include_dir()); one shared
// library holding both the kernels (included below) and these handlers. Layouts are those documented in
// scan_kernels.cpp; the Python side makes every operand contiguous in that layout and passes the optional ones
// (bias, D, z, h0, checkpoints, dz) as zero-size arrays when absent (a zero-size buffer becomes a null pointer here).
// dtype: every floating operand shares one element type, float32 or float64.

#include "scan_kernels.cpp"  // from hybridc_native/csrc (on the include path)

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

void *ptr(const ffi::AnyBuffer &b) { return b.element_count() ? b.untyped_data() : nullptr; }
template <class R> void *rptr(R &r) { return r->element_count() ? r->untyped_data() : nullptr; }

// 0 float32, 1 float64, -1 anything else
int dtype_code(const ffi::AnyBuffer &b) {
    switch (b.element_type()) {
        case ffi::DataType::F32: return 0;
        case ffi::DataType::F64: return 1;
        default: return -1;
    }
}

ffi::Error bad_dtype() { return ffi::Error::InvalidArgument("hybridc scan kernels take float32 or float64 only"); }

// u, delta, z: [Bt, D, L]; Bm, Cm: [Bt, G, N, L]; ckpt [Bt, D, nK, N] or empty (no backward will follow).
ffi::Error SsForward(ffi::AnyBuffer u, ffi::AnyBuffer delta, ffi::AnyBuffer bias, ffi::AnyBuffer A, ffi::AnyBuffer Bm,
                     ffi::AnyBuffer Cm, ffi::AnyBuffer Dv, ffi::AnyBuffer z, ffi::AnyBuffer h0,
                     ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> last,
                     ffi::Result<ffi::AnyBuffer> ckpt, int64_t softplus, int64_t S, int64_t K, int64_t nthreads) {
    const int code = dtype_code(u);
    if (code < 0) return bad_dtype();
    auto ud = u.dimensions(), bd = Bm.dimensions();
    if (ud.size() != 3 || bd.size() != 4) return ffi::Error::InvalidArgument("selective scan: bad operand ranks");
    const int64_t Bt = ud[0], D = ud[1], L = ud[2], G = bd[1], N = bd[2];
    if (Bt * D * L == 0) return ffi::Error::Success();
    hybridc_ss_forward(code, (int)nthreads, (int)softplus, ptr(u), ptr(delta), ptr(bias), ptr(A), ptr(Bm), ptr(Cm),
                       ptr(Dv), ptr(z), ptr(h0), rptr(out), rptr(last), rptr(ckpt), Bt, D, L, N, G, S, K);
    return ffi::Error::Success();
}

// dz is empty when there is no z; dB_part, dC_part [Bt, G, S, N, L]; dA_part, dh0 [Bt, D, N]; dD_part, dbias_part [Bt, D]
ffi::Error SsBackward(ffi::AnyBuffer u, ffi::AnyBuffer delta, ffi::AnyBuffer bias, ffi::AnyBuffer A, ffi::AnyBuffer Bm,
                      ffi::AnyBuffer Cm, ffi::AnyBuffer Dv, ffi::AnyBuffer z, ffi::AnyBuffer ckpt, ffi::AnyBuffer dout,
                      ffi::AnyBuffer dlast, ffi::Result<ffi::AnyBuffer> du, ffi::Result<ffi::AnyBuffer> ddelta,
                      ffi::Result<ffi::AnyBuffer> dz, ffi::Result<ffi::AnyBuffer> dA_part,
                      ffi::Result<ffi::AnyBuffer> dB_part, ffi::Result<ffi::AnyBuffer> dC_part,
                      ffi::Result<ffi::AnyBuffer> dD_part, ffi::Result<ffi::AnyBuffer> dbias_part,
                      ffi::Result<ffi::AnyBuffer> dh0, int64_t softplus, int64_t S, int64_t K, int64_t nthreads) {
    const int code = dtype_code(u);
    if (code < 0) return bad_dtype();
    auto ud = u.dimensions(), bd = Bm.dimensions();
    if (ud.size() != 3 || bd.size() != 4) return ffi::Error::InvalidArgument("selective scan: bad operand ranks");
    const int64_t Bt = ud[0], D = ud[1], L = ud[2], G = bd[1], N = bd[2];
    if (Bt * D * L == 0) return ffi::Error::Success();
    hybridc_ss_backward(code, (int)nthreads, (int)softplus, ptr(u), ptr(delta), ptr(bias), ptr(A), ptr(Bm), ptr(Cm),
                        ptr(Dv), ptr(z), ptr(ckpt), ptr(dout), ptr(dlast), rptr(du), rptr(ddelta), rptr(dz),
                        rptr(dA_part), rptr(dB_part), rptr(dC_part), rptr(dD_part), rptr(dbias_part), rptr(dh0), Bt,
                        D, L, N, G, S, K);
    return ffi::Error::Success();
}

// a, x, h: [Bt, L, W]; h0 [Bt, W] or empty
ffi::Error LrForward(ffi::AnyBuffer a, ffi::AnyBuffer x, ffi::AnyBuffer h0, ffi::Result<ffi::AnyBuffer> h,
                     int64_t nthreads) {
    const int code = dtype_code(x);
    if (code < 0) return bad_dtype();
    auto xd = x.dimensions();
    if (xd.size() != 3) return ffi::Error::InvalidArgument("linear recurrence: x must be [B, L, W]");
    if (xd[0] * xd[1] * xd[2] == 0) return ffi::Error::Success();
    hybridc_lr_forward(code, (int)nthreads, ptr(a), ptr(x), ptr(h0), rptr(h), xd[0], xd[1], xd[2]);
    return ffi::Error::Success();
}

// dh0 is empty when there is no h0
ffi::Error LrBackward(ffi::AnyBuffer a, ffi::AnyBuffer h, ffi::AnyBuffer h0, ffi::AnyBuffer dh,
                      ffi::Result<ffi::AnyBuffer> da, ffi::Result<ffi::AnyBuffer> dx,
                      ffi::Result<ffi::AnyBuffer> dh0, int64_t nthreads) {
    const int code = dtype_code(h);
    if (code < 0) return bad_dtype();
    auto hd = h.dimensions();
    if (hd.size() != 3) return ffi::Error::InvalidArgument("linear recurrence: h must be [B, L, W]");
    if (hd[0] * hd[1] * hd[2] == 0) return ffi::Error::Success();
    hybridc_lr_backward(code, (int)nthreads, ptr(a), ptr(h), ptr(h0), ptr(dh), rptr(da), rptr(dx), rptr(dh0), hd[0],
                        hd[1], hd[2]);
    return ffi::Error::Success();
}

// q, k [Bt, L, H, K]; v [Bt, L, H, V]; g (empty: the plain delta rule), beta [Bt, L, H]; h0 [Bt, H, K, V] or empty;
// ckpt [Bt, H, nC, K, V] or empty (no backward will follow).
ffi::Error DrForward(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer g, ffi::AnyBuffer beta,
                     ffi::AnyBuffer h0, ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> last,
                     ffi::Result<ffi::AnyBuffer> ckpt, int64_t checkpoint_every, double scale, int64_t nthreads) {
    const int code = dtype_code(q);
    if (code < 0) return bad_dtype();
    auto qd = q.dimensions(), vd = v.dimensions();
    if (qd.size() != 4 || vd.size() != 4) return ffi::Error::InvalidArgument("delta rule: q and v must be rank 4");
    if (qd[0] * qd[1] * qd[2] == 0) return ffi::Error::Success();
    hybridc_dr_forward(code, (int)nthreads, ptr(q), ptr(k), ptr(v), ptr(g), ptr(beta), ptr(h0), rptr(out),
                       rptr(last), rptr(ckpt), qd[0], qd[1], qd[2], qd[3], vd[3], checkpoint_every, scale);
    return ffi::Error::Success();
}

// dg is empty when g is; dh0 is empty when there is no h0.
ffi::Error DrBackward(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer g, ffi::AnyBuffer beta,
                      ffi::AnyBuffer ckpt, ffi::AnyBuffer dout, ffi::AnyBuffer dlast, ffi::Result<ffi::AnyBuffer> dq,
                      ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv, ffi::Result<ffi::AnyBuffer> dg,
                      ffi::Result<ffi::AnyBuffer> dbeta, ffi::Result<ffi::AnyBuffer> dh0, int64_t checkpoint_every,
                      double scale, int64_t nthreads) {
    const int code = dtype_code(q);
    if (code < 0) return bad_dtype();
    auto qd = q.dimensions(), vd = v.dimensions();
    if (qd.size() != 4 || vd.size() != 4) return ffi::Error::InvalidArgument("delta rule: q and v must be rank 4");
    if (qd[0] * qd[1] * qd[2] == 0) return ffi::Error::Success();
    hybridc_dr_backward(code, (int)nthreads, ptr(q), ptr(k), ptr(v), ptr(g), ptr(beta), ptr(ckpt), ptr(dout),
                        ptr(dlast), rptr(dq), rptr(dk), rptr(dv), rptr(dg), rptr(dbeta), rptr(dh0), qd[0], qd[1],
                        qd[2], qd[3], vd[3], checkpoint_every, scale);
    return ffi::Error::Success();
}

// x, y [Bt, L, H, P]; dt [Bt, L, H]; Bm, Cm [Bt, L, G, N]; A, bias [H]; Dv [H, P]; h0, last [Bt, H, P, N];
// ckpt [Bt, H, nK, N, NB BW] or empty (no backward will follow).
ffi::Error SsdForward(ffi::AnyBuffer x, ffi::AnyBuffer dt, ffi::AnyBuffer bias, ffi::AnyBuffer A, ffi::AnyBuffer Bm,
                      ffi::AnyBuffer Cm, ffi::AnyBuffer Dv, ffi::AnyBuffer h0, ffi::Result<ffi::AnyBuffer> y,
                      ffi::Result<ffi::AnyBuffer> last, ffi::Result<ffi::AnyBuffer> ckpt, int64_t softplus, int64_t S,
                      int64_t K, int64_t nthreads) {
    const int code = dtype_code(x);
    if (code < 0) return bad_dtype();
    auto xd = x.dimensions(), bd = Bm.dimensions();
    if (xd.size() != 4 || bd.size() != 4) return ffi::Error::InvalidArgument("ssd: bad operand ranks");
    if (xd[0] * xd[1] * xd[2] * xd[3] == 0) return ffi::Error::Success();
    hybridc_ssd_forward(code, (int)nthreads, (int)softplus, ptr(x), ptr(dt), ptr(bias), ptr(A), ptr(Bm), ptr(Cm),
                        ptr(Dv), ptr(h0), rptr(y), rptr(last), rptr(ckpt), xd[0], xd[1], xd[2], xd[3], bd[3], bd[2],
                        S, K, nullptr);
    return ffi::Error::Success();
}

// ddt_part [Bt, H, S, L]; dA_part [Bt, H, S]; dB_part, dC_part [Bt, H, S, L, N]; dD_part [Bt, H, P];
// dh0 [Bt, H, P, N] or empty
ffi::Error SsdBackward(ffi::AnyBuffer x, ffi::AnyBuffer dt, ffi::AnyBuffer bias, ffi::AnyBuffer A, ffi::AnyBuffer Bm,
                       ffi::AnyBuffer Cm, ffi::AnyBuffer Dv, ffi::AnyBuffer ckpt, ffi::AnyBuffer dy,
                       ffi::AnyBuffer dlast, ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> ddt_part,
                       ffi::Result<ffi::AnyBuffer> dA_part, ffi::Result<ffi::AnyBuffer> dB_part,
                       ffi::Result<ffi::AnyBuffer> dC_part, ffi::Result<ffi::AnyBuffer> dD_part,
                       ffi::Result<ffi::AnyBuffer> dh0, int64_t softplus, int64_t S, int64_t K, int64_t nthreads) {
    const int code = dtype_code(x);
    if (code < 0) return bad_dtype();
    auto xd = x.dimensions(), bd = Bm.dimensions();
    if (xd.size() != 4 || bd.size() != 4) return ffi::Error::InvalidArgument("ssd: bad operand ranks");
    if (xd[0] * xd[1] * xd[2] * xd[3] == 0) return ffi::Error::Success();
    hybridc_ssd_backward(code, (int)nthreads, (int)softplus, ptr(x), ptr(dt), ptr(bias), ptr(A), ptr(Bm), ptr(Cm),
                         ptr(Dv), ptr(ckpt), ptr(dy), ptr(dlast), rptr(dx), rptr(ddt_part), rptr(dA_part),
                         rptr(dB_part), rptr(dC_part), rptr(dD_part), rptr(dh0), xd[0], xd[1], xd[2], xd[3], bd[3],
                         bd[2], S, K, nullptr);
    return ffi::Error::Success();
}

// The Mamba-2 layer's fused conv + silu (causal_conv1d.cpp): x, y, dy, dx [Bt, L, C] contiguous; w [C, K];
// bias [C] or empty; h0, dh0 [Bt, C, K-1] or empty; dw_part [T, K + 1, C].
ffi::Error ConvForward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer bias, ffi::AnyBuffer h0,
                       ffi::Result<ffi::AnyBuffer> y, int64_t silu, int64_t nthreads) {
    const int code = dtype_code(x);
    if (code < 0) return bad_dtype();
    auto xd = x.dimensions(), wd = w.dimensions();
    if (xd.size() != 3 || wd.size() != 2) return ffi::Error::InvalidArgument("causal_conv1d: bad operand ranks");
    if (xd[0] * xd[1] * xd[2] == 0) return ffi::Error::Success();
    hybridc_conv_forward(code, (int)nthreads, (int)silu, ptr(x), ptr(w), ptr(bias), ptr(h0), rptr(y), xd[0], xd[1],
                         xd[2], wd[1], xd[1] * xd[2], xd[2]);
    return ffi::Error::Success();
}

ffi::Error ConvBackward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer bias, ffi::AnyBuffer h0, ffi::AnyBuffer dy,
                        ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> dw_part,
                        ffi::Result<ffi::AnyBuffer> dh0, int64_t silu, int64_t nthreads) {
    const int code = dtype_code(x);
    if (code < 0) return bad_dtype();
    auto xd = x.dimensions(), wd = w.dimensions();
    if (xd.size() != 3 || wd.size() != 2) return ffi::Error::InvalidArgument("causal_conv1d: bad operand ranks");
    if (xd[0] * xd[1] * xd[2] == 0) return ffi::Error::Success();
    hybridc_conv_backward(code, (int)nthreads, (int)silu, ptr(x), ptr(w), ptr(bias), ptr(h0), ptr(dy), rptr(dx),
                          rptr(dw_part), rptr(dh0), xd[0], xd[1], xd[2], wd[1], xd[1] * xd[2], xd[2], xd[1] * xd[2],
                          xd[2]);
    return ffi::Error::Success();
}

// The gated RMSNorm (rms_norm_gated.cpp): y, z, out, dout, dy, dz [R, E] contiguous; w [E] or empty (mode 0);
// dw_part [S, E] (empty in mode 0).
ffi::Error NormForward(ffi::AnyBuffer y, ffi::AnyBuffer z, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> out,
                       int64_t mode, int64_t group_size, double eps, int64_t splits, int64_t nthreads) {
    const int code = dtype_code(y);
    if (code < 0) return bad_dtype();
    auto yd = y.dimensions();
    if (yd.size() != 2) return ffi::Error::InvalidArgument("rms_norm_gated: y must be rank 2");
    if (yd[0] * yd[1] == 0) return ffi::Error::Success();
    hybridc_gnorm_forward(code, (int)nthreads, (int)mode, ptr(y), ptr(z), ptr(w), rptr(out), yd[0], yd[1], group_size,
                          eps, yd[1], yd[1], splits);
    return ffi::Error::Success();
}

ffi::Error NormBackward(ffi::AnyBuffer y, ffi::AnyBuffer z, ffi::AnyBuffer w, ffi::AnyBuffer dout,
                        ffi::Result<ffi::AnyBuffer> dy, ffi::Result<ffi::AnyBuffer> dz,
                        ffi::Result<ffi::AnyBuffer> dw_part, int64_t mode, int64_t group_size, double eps,
                        int64_t splits, int64_t nthreads) {
    const int code = dtype_code(y);
    if (code < 0) return bad_dtype();
    auto yd = y.dimensions();
    if (yd.size() != 2) return ffi::Error::InvalidArgument("rms_norm_gated: y must be rank 2");
    if (yd[0] * yd[1] == 0) return ffi::Error::Success();
    hybridc_gnorm_backward(code, (int)nthreads, (int)mode, ptr(y), ptr(z), ptr(w), ptr(dout), rptr(dy), rptr(dz),
                           rptr(dw_part), yd[0], yd[1], group_size, eps, yd[1], yd[1], yd[1], splits);
    return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcDrForward, DrForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // q
                                  .Arg<ffi::AnyBuffer>()  // k
                                  .Arg<ffi::AnyBuffer>()  // v
                                  .Arg<ffi::AnyBuffer>()  // g
                                  .Arg<ffi::AnyBuffer>()  // beta
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Ret<ffi::AnyBuffer>()  // out
                                  .Ret<ffi::AnyBuffer>()  // last
                                  .Ret<ffi::AnyBuffer>()  // ckpt
                                  .Attr<int64_t>("checkpoint_every")
                                  .Attr<double>("scale")
                                  .Attr<int64_t>("nthreads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcDrBackward, DrBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // q
                                  .Arg<ffi::AnyBuffer>()  // k
                                  .Arg<ffi::AnyBuffer>()  // v
                                  .Arg<ffi::AnyBuffer>()  // g
                                  .Arg<ffi::AnyBuffer>()  // beta
                                  .Arg<ffi::AnyBuffer>()  // ckpt
                                  .Arg<ffi::AnyBuffer>()  // dout
                                  .Arg<ffi::AnyBuffer>()  // dlast
                                  .Ret<ffi::AnyBuffer>()  // dq
                                  .Ret<ffi::AnyBuffer>()  // dk
                                  .Ret<ffi::AnyBuffer>()  // dv
                                  .Ret<ffi::AnyBuffer>()  // dg
                                  .Ret<ffi::AnyBuffer>()  // dbeta
                                  .Ret<ffi::AnyBuffer>()  // dh0
                                  .Attr<int64_t>("checkpoint_every")
                                  .Attr<double>("scale")
                                  .Attr<int64_t>("nthreads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcSsForward, SsForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // u
                                  .Arg<ffi::AnyBuffer>()  // delta
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Arg<ffi::AnyBuffer>()  // A
                                  .Arg<ffi::AnyBuffer>()  // B
                                  .Arg<ffi::AnyBuffer>()  // C
                                  .Arg<ffi::AnyBuffer>()  // D
                                  .Arg<ffi::AnyBuffer>()  // z
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Ret<ffi::AnyBuffer>()  // out
                                  .Ret<ffi::AnyBuffer>()  // last
                                  .Ret<ffi::AnyBuffer>()  // ckpt
                                  .Attr<int64_t>("softplus")
                                  .Attr<int64_t>("splits")
                                  .Attr<int64_t>("checkpoint_every")
                                  .Attr<int64_t>("nthreads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcSsBackward, SsBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // u
                                  .Arg<ffi::AnyBuffer>()  // delta
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Arg<ffi::AnyBuffer>()  // A
                                  .Arg<ffi::AnyBuffer>()  // B
                                  .Arg<ffi::AnyBuffer>()  // C
                                  .Arg<ffi::AnyBuffer>()  // D
                                  .Arg<ffi::AnyBuffer>()  // z
                                  .Arg<ffi::AnyBuffer>()  // ckpt
                                  .Arg<ffi::AnyBuffer>()  // dout
                                  .Arg<ffi::AnyBuffer>()  // dlast
                                  .Ret<ffi::AnyBuffer>()  // du
                                  .Ret<ffi::AnyBuffer>()  // ddelta
                                  .Ret<ffi::AnyBuffer>()  // dz
                                  .Ret<ffi::AnyBuffer>()  // dA_part
                                  .Ret<ffi::AnyBuffer>()  // dB_part
                                  .Ret<ffi::AnyBuffer>()  // dC_part
                                  .Ret<ffi::AnyBuffer>()  // dD_part
                                  .Ret<ffi::AnyBuffer>()  // dbias_part
                                  .Ret<ffi::AnyBuffer>()  // dh0
                                  .Attr<int64_t>("softplus")
                                  .Attr<int64_t>("splits")
                                  .Attr<int64_t>("checkpoint_every")
                                  .Attr<int64_t>("nthreads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcLrForward, LrForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // a
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Ret<ffi::AnyBuffer>()  // h
                                  .Attr<int64_t>("nthreads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcLrBackward, LrBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // a
                                  .Arg<ffi::AnyBuffer>()  // h
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Arg<ffi::AnyBuffer>()  // dh
                                  .Ret<ffi::AnyBuffer>()  // da
                                  .Ret<ffi::AnyBuffer>()  // dx
                                  .Ret<ffi::AnyBuffer>()  // dh0
                                  .Attr<int64_t>("nthreads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcSsdForward, SsdForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // dt
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Arg<ffi::AnyBuffer>()  // A
                                  .Arg<ffi::AnyBuffer>()  // B
                                  .Arg<ffi::AnyBuffer>()  // C
                                  .Arg<ffi::AnyBuffer>()  // D
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Ret<ffi::AnyBuffer>()  // y
                                  .Ret<ffi::AnyBuffer>()  // last
                                  .Ret<ffi::AnyBuffer>()  // ckpt
                                  .Attr<int64_t>("softplus")
                                  .Attr<int64_t>("splits")
                                  .Attr<int64_t>("checkpoint_every")
                                  .Attr<int64_t>("nthreads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcSsdBackward, SsdBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // dt
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Arg<ffi::AnyBuffer>()  // A
                                  .Arg<ffi::AnyBuffer>()  // B
                                  .Arg<ffi::AnyBuffer>()  // C
                                  .Arg<ffi::AnyBuffer>()  // D
                                  .Arg<ffi::AnyBuffer>()  // ckpt
                                  .Arg<ffi::AnyBuffer>()  // dy
                                  .Arg<ffi::AnyBuffer>()  // dlast
                                  .Ret<ffi::AnyBuffer>()  // dx
                                  .Ret<ffi::AnyBuffer>()  // ddt_part
                                  .Ret<ffi::AnyBuffer>()  // dA_part
                                  .Ret<ffi::AnyBuffer>()  // dB_part
                                  .Ret<ffi::AnyBuffer>()  // dC_part
                                  .Ret<ffi::AnyBuffer>()  // dD_part
                                  .Ret<ffi::AnyBuffer>()  // dh0
                                  .Attr<int64_t>("softplus")
                                  .Attr<int64_t>("splits")
                                  .Attr<int64_t>("checkpoint_every")
                                  .Attr<int64_t>("nthreads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcConvForward, ConvForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // w
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Ret<ffi::AnyBuffer>()  // y
                                  .Attr<int64_t>("silu")
                                  .Attr<int64_t>("nthreads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcConvBackward, ConvBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // w
                                  .Arg<ffi::AnyBuffer>()  // bias
                                  .Arg<ffi::AnyBuffer>()  // h0
                                  .Arg<ffi::AnyBuffer>()  // dy
                                  .Ret<ffi::AnyBuffer>()  // dx
                                  .Ret<ffi::AnyBuffer>()  // dw_part
                                  .Ret<ffi::AnyBuffer>()  // dh0
                                  .Attr<int64_t>("silu")
                                  .Attr<int64_t>("nthreads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcNormForward, NormForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // y
                                  .Arg<ffi::AnyBuffer>()  // z
                                  .Arg<ffi::AnyBuffer>()  // w
                                  .Ret<ffi::AnyBuffer>()  // out
                                  .Attr<int64_t>("mode")
                                  .Attr<int64_t>("group_size")
                                  .Attr<double>("eps")
                                  .Attr<int64_t>("splits")
                                  .Attr<int64_t>("nthreads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HybridcNormBackward, NormBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // y
                                  .Arg<ffi::AnyBuffer>()  // z
                                  .Arg<ffi::AnyBuffer>()  // w
                                  .Arg<ffi::AnyBuffer>()  // dout
                                  .Ret<ffi::AnyBuffer>()  // dy
                                  .Ret<ffi::AnyBuffer>()  // dz
                                  .Ret<ffi::AnyBuffer>()  // dw_part
                                  .Attr<int64_t>("mode")
                                  .Attr<int64_t>("group_size")
                                  .Attr<double>("eps")
                                  .Attr<int64_t>("splits")
                                  .Attr<int64_t>("nthreads"));
