// The gpu runner's own checks, below the backend (label gpu; linked with the
// CUDA runtime).
//  - A CUDA driver too old for this build's runtime makes cudaGetDeviceCount
//    fail with cudaErrorInsufficientDriver, and every other gpu test then
//    skips with that reason; this test turns it into a visible failure. A
//    machine without any driver (a CPU machine) skips it.
//  - A backend makes a primary context only on the devices it uses (a
//    process using one GPU of several holds no context on the others).
#include <gtest/gtest.h>

#include <cudaTypedefs.h>
#include <cuda_runtime_api.h>

#include <string>

#include <stepgraph/runtime/backend.h>

namespace rt = stepgraph::runtime;

namespace {

std::string version_text(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

TEST(CudaDriver, IsNotTooOldForThisBuild) {
  int driver = 0;
  ASSERT_EQ(cudaDriverGetVersion(&driver), cudaSuccess);
  if (driver == 0) GTEST_SKIP() << "no CUDA driver is installed on this machine";
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaErrorNoDevice) GTEST_SKIP() << "a CUDA driver but no device: " << cudaGetErrorString(e);
  ASSERT_NE(e, cudaErrorInsufficientDriver)
      << "the CUDA driver supports CUDA " << version_text(driver) << " but this build's runtime is CUDA "
      << version_text(CUDART_VERSION) << ": update the driver (every gpu test would otherwise skip)";
  ASSERT_EQ(e, cudaSuccess) << cudaGetErrorName(e) << ": " << cudaGetErrorString(e);
  std::string reason;
  EXPECT_TRUE(rt::Backend::cuda_available(&reason)) << reason;
}

/// cuDevicePrimaryCtxGetState through the runtime's driver entry point (no
/// driver library linked); -1 when it cannot be asked.
int primary_context_active(int device) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  if (cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxGetState", &fn, 12000, cudaEnableDefault, &found) !=
          cudaSuccess ||
      found != cudaDriverEntryPointSuccess)
    return -1;
  unsigned int flags = 0;
  int active = 0;
  if (reinterpret_cast<PFN_cuDevicePrimaryCtxGetState_v7000>(fn)(device, &flags, &active) != CUDA_SUCCESS) return -1;
  return active;
}

TEST(CudaDriver, ABackendMakesContextsOnlyOnTheDevicesItUses) {
  std::string reason;
  if (!rt::Backend::cuda_available(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  if (count < 2) GTEST_SKIP() << "needs two devices";
  if (primary_context_active(0) != 0) GTEST_SKIP() << "device 0 already has a context in this process";
  auto be = rt::Backend::create(rt::BackendKind::kCuda);
  const int last = count - 1;
  auto s = be->create_stream(last, {.priority = 1});
  auto d = be->allocate(last, 256);
  auto p = be->allocate_pinned(256);
  s.copy(d.slice(), p.slice());
  s.synchronize();
  (void)be->device_fault(0);
  EXPECT_EQ(primary_context_active(last), 1);
  EXPECT_EQ(primary_context_active(0), 0) << "using device " << last << " made a context on device 0";
}

}  // namespace
