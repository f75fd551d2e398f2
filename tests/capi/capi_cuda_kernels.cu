// `__global__` kernels for the C ABI's cuda test (capi_cuda_test.cpp), in
// the form Note [C kernels] of stepgraph/c/stepgraph.h gives them: one
// `void*` parameter per declared access, in the order of the accesses, and
// nothing else (a count is read from a buffer). Launched with
// ceil(threads / 128) blocks of 128 threads; a grid-stride loop covers any
// count.
extern "C" {
const void* sgt_cu_add_one(void);
const void* sgt_cu_copy_plus_one(void);
}

namespace {

/// values[i] += 1 for i < *count (ints).
__global__ void add_one(void* values, void* count) {
  int* v = static_cast<int*>(values);
  const int n = *static_cast<const int*>(count);
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n;
       i += static_cast<int>(gridDim.x * blockDim.x))
    v[i] += 1;
}

/// out[i] = in[i] + 1 for i < *count (ints).
__global__ void copy_plus_one(void* in, void* out, void* count) {
  const int* a = static_cast<const int*>(in);
  int* b = static_cast<int*>(out);
  const int n = *static_cast<const int*>(count);
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n;
       i += static_cast<int>(gridDim.x * blockDim.x))
    b[i] = a[i] + 1;
}

}  // namespace

extern "C" {
const void* sgt_cu_add_one(void) {
  return reinterpret_cast<const void*>(&add_one);
}
const void* sgt_cu_copy_plus_one(void) {
  return reinterpret_cast<const void*>(&copy_plus_one);
}
}
