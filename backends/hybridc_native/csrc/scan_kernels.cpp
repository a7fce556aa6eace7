// hybridc's CPU kernels, one shared library: the Mamba-1 selective scan (selective_scan.cpp), the RG-LRU diagonal
// linear recurrence (linear_recurrence.cpp), the (gated) delta rule (delta_rule.cpp), Mamba-2's SSD (ssd.cpp) and
// the fused one-token decoding steps of the Mamba-1 / Mamba-2 mixers (decode_step.cpp),
// on the vector math and thread pool of vec_math.h. Each source's header comment gives its math, layouts and work
// split.
//
// Plain C++ with a C ABI (no framework headers; compiles in ~5-8 s with g++ 12, once, then cached by
// hybridc_native.build). The torch backend loads the library through ctypes; the JAX backend includes this file in
// its XLA FFI binding (hybridc_jax/csrc/xla_ffi.cpp) and calls the kernels as XLA custom calls. The callers own the
// layouts, allocation and autodiff wiring.
//
// Why one file that includes the others (a unity build): both bindings compile exactly this file (the JAX one
// through #include), so the library stays one translation unit, and the compiler sees every kernel with the shared
// helpers at once and inlines them as before the split. hybridc_native.build hashes every file of csrc/ into its
// cache key, so an edit to any included source rebuilds.

#include "selective_scan.cpp"
#include "linear_recurrence.cpp"
#include "delta_rule.cpp"
#include "ssd.cpp"
#include "causal_conv1d.cpp"
#include "rms_norm_gated.cpp"
#include "decode_step.cpp"

extern "C" {

// The version of every entry point's signature in this library; bump it on any change (the bindings check it).
int hybridc_ss_abi_version() { return 7; }

}  // extern "C"
