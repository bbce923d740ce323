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
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <optional>

namespace {

// Rows per parallel task: about 16k elements, so that the few-row tensors
// of a decode step stay on the calling thread instead of waking OpenMP.
constexpr int64_t kGrainElems = 1 << 14;

template <typename scalar_t>
void masked_add_rmsnorm_rows(scalar_t* x, int64_t x_stride, scalar_t* res,
                             int64_t res_stride, const float* mask,
                             const scalar_t* w, int64_t hidden, double eps,
                             int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t r = begin; r < end; ++r) {
    scalar_t* xr = x + r * x_stride;
    scalar_t* rr = res + r * res_stride;
    const acc_t m = mask ? static_cast<acc_t>(mask[r]) : acc_t(1);
    acc_t sum_sq = 0;
    if (m != acc_t(0)) {
#pragma omp simd reduction(+ : sum_sq)
      for (int64_t j = 0; j < hidden; ++j) {
        const scalar_t v = static_cast<scalar_t>(static_cast<acc_t>(rr[j]) +
                                                 m * static_cast<acc_t>(xr[j]));
        rr[j] = v;
        const acc_t vf = static_cast<acc_t>(v);
        sum_sq += vf * vf;
      }
    } else {
#pragma omp simd reduction(+ : sum_sq)
      for (int64_t j = 0; j < hidden; ++j) {
        const acc_t vf = static_cast<acc_t>(rr[j]);
        sum_sq += vf * vf;
      }
    }
    const acc_t inv_rms =
        acc_t(1) / std::sqrt(sum_sq / static_cast<acc_t>(hidden) +
                             static_cast<acc_t>(eps));
#pragma omp simd
    for (int64_t j = 0; j < hidden; ++j) {
      xr[j] = static_cast<scalar_t>(static_cast<acc_t>(rr[j]) * inv_rms *
                                    static_cast<acc_t>(w[j]));
    }
  }
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
  const int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(hidden, 1));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "masked_add_rmsnorm", [&] {
        scalar_t* xp = x2.data_ptr<scalar_t>();
        scalar_t* rp = r2.data_ptr<scalar_t>();
        const scalar_t* wp = weight.data_ptr<scalar_t>();
        const int64_t xs = x2.stride(0);
        const int64_t rs = r2.stride(0);
        at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
          masked_add_rmsnorm_rows<scalar_t>(xp, xs, rp, rs, mask_ptr, wp,
                                            hidden, eps, begin, end);
        });
      });
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
