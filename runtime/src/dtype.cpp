// Element types: sizes, names, the 16-bit float conversions, and the
// one-rank collectives (collectives_hook.h).
#include <bit>
#include <cmath>
#include <cstring>

#include <stepgraph/runtime/collectives_hook.h>

namespace stepgraph::runtime {

std::size_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
    case DType::kUInt8:
      return 1;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
  }
  return 1;
}

std::string_view to_string(DType t) noexcept {
  switch (t) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kUInt8:
      return "uint8";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "?";
}

std::string_view to_string(ReduceOp op) noexcept {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
    case ReduceOp::kAverage:
      return "avg";
  }
  return "?";
}

// binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits = 0;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: value = mant * 2^-24, exact in float32
      const float v = std::ldexp(static_cast<float>(mant), -24);
      return sign ? -v : v;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, or NaN with its payload
  } else {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

std::uint16_t float_to_half(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {
    // Below the smallest normal (2^-14): a subnormal multiple of 2^-24,
    // rounded to nearest even by the float unit itself (exact scaling).
    const float a = std::bit_cast<float>(abs);
    const float scaled = a * 16777216.0f;                               // a / 2^-24, exact
    const auto m = static_cast<std::uint32_t>(std::nearbyint(scaled));  // default mode: ties to even
    return static_cast<std::uint16_t>(sign | m);  // m == 0x400 becomes the smallest normal, as it should
  }
  // Normal: drop 13 mantissa bits with round to nearest even.
  const std::uint32_t rebased = abs - (112u << 23);
  const std::uint32_t lsb = (rebased >> 13) & 1u;
  const std::uint32_t rounded = rebased + 0xfffu + lsb;
  return static_cast<std::uint16_t>(sign | (rounded >> 13));
}

float bfloat16_to_float(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

std::uint16_t float_to_bfloat16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  const std::uint32_t lsb = (x >> 16) & 1u;
  return static_cast<std::uint16_t>((x + 0x7fffu + lsb) >> 16);
}

void SingleDeviceCollectives::all_gather(StreamRef stream, const Buffer& send, std::size_t send_offset,
                                         const Buffer& recv, std::size_t recv_offset, std::size_t count, DType type) {
  const std::size_t bytes = count * dtype_size(type);
  if (bytes == 0 || (send.id() == recv.id() && send_offset == recv_offset)) return;
  stream.copy(recv.slice(recv_offset, bytes), send.slice(send_offset, bytes), "all_gather (one rank)");
}

void SingleDeviceCollectives::reduce_scatter(StreamRef stream, const Buffer& send, std::size_t send_offset,
                                             const Buffer& recv, std::size_t recv_offset, std::size_t count, DType type,
                                             ReduceOp) {
  all_gather(stream, send, send_offset, recv, recv_offset, count, type);
}

}  // namespace stepgraph::runtime
