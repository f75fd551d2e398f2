#include "reduce.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace stepgraph::collectives::detail {
namespace {

using runtime::DType;
using runtime::ReduceOp;

constexpr std::size_t kBlock = 2048;  // elements per block: the accumulator stays in L1

// Storage type S, accumulation type A, and the conversions between them.
template <class S, class A>
struct Plain {
  using Acc = A;
  static A load(const std::byte* p, std::size_t i) {
    S v;
    std::memcpy(&v, p + i * sizeof(S), sizeof(S));
    return static_cast<A>(v);
  }
  static void store(std::byte* p, std::size_t i, A v) {
    const S s = static_cast<S>(v);
    std::memcpy(p + i * sizeof(S), &s, sizeof(S));
  }
};

/// A 16-bit float stored as its bits and reduced in float32.
template <float (*ToFloat)(std::uint16_t) noexcept, std::uint16_t (*FromFloat)(float) noexcept>
struct Bits16 {
  using Acc = float;
  static float load(const std::byte* p, std::size_t i) {
    std::uint16_t v;
    std::memcpy(&v, p + 2 * i, 2);
    return ToFloat(v);
  }
  static void store(std::byte* p, std::size_t i, float v) {
    const std::uint16_t s = FromFloat(v);
    std::memcpy(p + 2 * i, &s, 2);
  }
};
using Half = Bits16<runtime::half_to_float, runtime::float_to_half>;
using BFloat = Bits16<runtime::bfloat16_to_float, runtime::float_to_bfloat16>;

template <class A>
A add(A a, A b) {
  if constexpr (std::is_integral_v<A>) {
    using U = std::make_unsigned_t<A>;  // wraps instead of overflowing (NCCL's integers wrap too)
    return static_cast<A>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
  } else {
    return a + b;
  }
}

template <class T>
void run(ReduceOp op, std::span<const std::byte* const> src, std::span<std::byte* const> dst, std::size_t count,
         int divisor) {
  using A = typename T::Acc;
  std::array<A, kBlock> acc;
  for (std::size_t base = 0; base < count; base += kBlock) {
    const std::size_t m = std::min(kBlock, count - base);
    for (std::size_t i = 0; i < m; ++i) acc[i] = T::load(src[0], base + i);
    for (std::size_t k = 1; k < src.size(); ++k) {
      const std::byte* s = src[k];
      switch (op) {
        case ReduceOp::kSum:
        case ReduceOp::kAverage:
          for (std::size_t i = 0; i < m; ++i) acc[i] = add(acc[i], T::load(s, base + i));
          break;
        case ReduceOp::kMax:
          for (std::size_t i = 0; i < m; ++i) acc[i] = std::max(acc[i], T::load(s, base + i));
          break;
        case ReduceOp::kMin:
          for (std::size_t i = 0; i < m; ++i) acc[i] = std::min(acc[i], T::load(s, base + i));
          break;
      }
    }
    if (op == ReduceOp::kAverage)
      for (std::size_t i = 0; i < m; ++i) acc[i] = static_cast<A>(acc[i] / static_cast<A>(divisor));
    for (std::byte* d : dst)
      for (std::size_t i = 0; i < m; ++i) T::store(d, base + i, acc[i]);
  }
}

}  // namespace

void reduce(DType type, ReduceOp op, std::span<const std::byte* const> src, std::span<std::byte* const> dst,
            std::size_t count, int divisor) {
  if (count == 0 || src.empty()) return;
  switch (type) {
    case DType::kFloat32:
      return run<Plain<float, float>>(op, src, dst, count, divisor);
    case DType::kFloat64:
      return run<Plain<double, double>>(op, src, dst, count, divisor);
    case DType::kInt32:
      return run<Plain<std::int32_t, std::int32_t>>(op, src, dst, count, divisor);
    case DType::kInt64:
      return run<Plain<std::int64_t, std::int64_t>>(op, src, dst, count, divisor);
    case DType::kUInt8:
      return run<Plain<std::uint8_t, std::uint32_t>>(op, src, dst, count, divisor);
    case DType::kFloat16:
      return run<Half>(op, src, dst, count, divisor);
    case DType::kBFloat16:
      return run<BFloat>(op, src, dst, count, divisor);
  }
}

}  // namespace stepgraph::collectives::detail
