// CPU twin of the Triton kernel in kernels/triton_ops.py: a masked residual
// add fused with the RMSNorm that follows it, in place, one pass per row
// over memory instead of the ~10 ATen ops of the PyTorch composite.
//
//   residual[r] = cast(float(residual[r]) + mask[r] * float(x[r]))
//   x[r]        = cast(float(residual[r]) * rsqrt(mean(float(residual[r])^2) + eps) * w)
//
// A row with mask 0 never reads x (it may hold anything) and keeps its
// residual; mask absent means 1 for every row (vLLM's fused_add_rms_norm).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <c10/util/bit_cast.h>

#include <cmath>
#include <cstdint>
#include <optional>

namespace {

// Rows per parallel task: at least 64k elements (tens of microseconds of
// work), so that decode- and scoring-sized tensors stay on the calling
// thread; waking OpenMP threads costs more than it saves below that, and
// far more when the cores are shared.
constexpr int64_t kGrainElems = 1 << 16;

// Element formats: how a stored element widens to fp32 and an fp32 result
// rounds back (to nearest even). bf16 and fp16 are handled as raw bits:
// through c10::BFloat16 / c10::Half GCC does not vectorize the row loops,
// and they ran ~8x slower.
struct F32 {
  using storage = float;
  static float widen(float v) { return v; }
  static float narrow(float v) { return v; }
};
struct BF16 {
  using storage = uint16_t;
  static float widen(uint16_t v) {
    return c10::bit_cast<float>(static_cast<uint32_t>(v) << 16);
  }
  static uint16_t narrow(float v) {
    const uint32_t u = c10::bit_cast<uint32_t>(v);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return v != v ? uint16_t{0x7FC0} : static_cast<uint16_t>(rounded);
  }
};
struct F16 {
  using storage = uint16_t;
  static float widen(uint16_t v) { return c10::detail::fp16_ieee_to_fp32_value(v); }
  static uint16_t narrow(float v) { return c10::detail::fp16_ieee_from_fp32_value(v); }
};

// The row loops are compiled for AVX-512 and AVX2 besides the x86-64
// baseline and picked at load time: portable, and the baseline's SSE2 code
// is ~6x slower on bf16 rows.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SWIFT_VLLM_TARGET_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SWIFT_VLLM_TARGET_CLONES
#endif

template <typename Fmt>
SWIFT_VLLM_TARGET_CLONES void masked_add_rmsnorm_rows(
    typename Fmt::storage* x, int64_t x_stride, typename Fmt::storage* res,
    int64_t res_stride, const float* mask, const typename Fmt::storage* w,
    int64_t hidden, float eps, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    typename Fmt::storage* xr = x + r * x_stride;
    typename Fmt::storage* rr = res + r * res_stride;
    const float m = mask ? mask[r] : 1.0f;
    float sum_sq = 0.0f;
    if (m != 0.0f) {
#pragma omp simd reduction(+ : sum_sq)
      for (int64_t j = 0; j < hidden; ++j) {
        const auto v = Fmt::narrow(Fmt::widen(rr[j]) + m * Fmt::widen(xr[j]));
        rr[j] = v;
        sum_sq += Fmt::widen(v) * Fmt::widen(v);
      }
    } else {
#pragma omp simd reduction(+ : sum_sq)
      for (int64_t j = 0; j < hidden; ++j) {
        sum_sq += Fmt::widen(rr[j]) * Fmt::widen(rr[j]);
      }
    }
    const float inv_rms =
        1.0f / std::sqrt(sum_sq / static_cast<float>(hidden) + eps);
#pragma omp simd
    for (int64_t j = 0; j < hidden; ++j) {
      xr[j] = Fmt::narrow(Fmt::widen(rr[j]) * inv_rms * Fmt::widen(w[j]));
    }
  }
}

template <typename Fmt>
typename Fmt::storage* data(const at::Tensor& t) {
  return static_cast<typename Fmt::storage*>(t.data_ptr());
}

void masked_add_rmsnorm_cpu(at::Tensor& x, at::Tensor& residual,
                            const std::optional<at::Tensor>& mask,
                            const at::Tensor& weight, double eps) {
  const int64_t hidden = x.size(-1);
  TORCH_CHECK(residual.sizes() == x.sizes(), "residual shape ",
              residual.sizes(), " != x shape ", x.sizes());
  TORCH_CHECK(residual.scalar_type() == x.scalar_type() &&
                  weight.scalar_type() == x.scalar_type(),
              "x, residual and weight must share a dtype");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == hidden &&
                  weight.is_contiguous(),
              "weight must be contiguous [", hidden, "]");
  TORCH_CHECK(x.stride(-1) == 1 && residual.stride(-1) == 1,
              "x and residual need a contiguous last dimension");
  // Views keep the in-place writes visible to the caller; they fail
  // loudly where the leading dimensions cannot be flattened.
  at::Tensor x2 = x.view({-1, hidden});
  at::Tensor r2 = residual.view({-1, hidden});
  const int64_t rows = x2.size(0);
  const float* mask_ptr = nullptr;
  if (mask.has_value()) {
    TORCH_CHECK(mask->scalar_type() == at::kFloat && mask->is_contiguous() &&
                    mask->numel() == rows,
                "mask must be a contiguous float32 tensor of ", rows,
                " elements");
    mask_ptr = mask->data_ptr<float>();
  }
  const float eps_f = static_cast<float>(eps);
  const int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(hidden, 1));
  auto run = [&](auto fmt) {
    using Fmt = decltype(fmt);
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      masked_add_rmsnorm_rows<Fmt>(data<Fmt>(x2), x2.stride(0), data<Fmt>(r2),
                                   r2.stride(0), mask_ptr, data<Fmt>(weight),
                                   hidden, eps_f, begin, end);
    });
  };
  switch (x.scalar_type()) {
    case at::kFloat: return run(F32{});
    case at::kBFloat16: return run(BF16{});
    case at::kHalf: return run(F16{});
    default: TORCH_CHECK(false, "masked_add_rmsnorm: unsupported dtype ", x.scalar_type());
  }
}

}  // namespace

// The schema is defined here when the library loads; kernels/ops.py defines
// it from Python instead when this library is absent.
TORCH_LIBRARY_FRAGMENT(swift_vllm, m) {
  m.def(
      "masked_add_rmsnorm(Tensor(a!) x, Tensor(b!) residual, Tensor? mask, "
      "Tensor weight, float eps) -> ()");
}

TORCH_LIBRARY_IMPL(swift_vllm, CPU, m) {
  m.impl("masked_add_rmsnorm", &masked_add_rmsnorm_cpu);
}
