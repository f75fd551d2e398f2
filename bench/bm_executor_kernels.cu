// Device twin of bm_executor's spin kernel: a dependent multiply-add chain
// of `iters` steps in one thread (about 1 µs for the calibrated count).
#include <cstdint>

namespace {
__global__ void spin_kernel(float* acc, std::int64_t iters) {
  float x = *acc;
  for (std::int64_t i = 0; i < iters; ++i) x = x * 0.999999f + 1e-7f;
  *acc = x;
}
}  // namespace

const void* bm_executor_spin_device() {
  return reinterpret_cast<const void*>(&spin_kernel);
}
