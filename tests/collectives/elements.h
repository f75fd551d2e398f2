// tests/collectives/elements.h — element values to and from bytes for the
// collectives tests, written independently of the code under test:
// float16 / bfloat16 values are made exactly representable (k / 64 with
// |k| <= 64), so encoding them needs no rounding.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include <stepgraph/runtime/collectives_hook.h>

namespace sgtest::elements {

using stepgraph::runtime::DType;

inline double decode(DType t, const std::byte* p) {
  switch (t) {
    case DType::kFloat32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::kFloat64: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case DType::kInt32: {
      std::int32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::kInt64: {
      std::int64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<double>(v);
    }
    case DType::kUInt8:
      return static_cast<double>(static_cast<unsigned char>(*p));
    case DType::kFloat16: {
      std::uint16_t h;
      std::memcpy(&h, p, 2);
      const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
      const double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
      return (h & 0x8000) ? -v : v;
    }
    case DType::kBFloat16: {
      std::uint16_t b;
      std::memcpy(&b, p, 2);
      const std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
  }
  return 0;
}

inline void encode(DType t, std::byte* p, double v) {
  switch (t) {
    case DType::kFloat32: {
      const auto f = static_cast<float>(v);
      std::memcpy(p, &f, 4);
      break;
    }
    case DType::kFloat64:
      std::memcpy(p, &v, 8);
      break;
    case DType::kInt32: {
      const auto i = static_cast<std::int32_t>(v);
      std::memcpy(p, &i, 4);
      break;
    }
    case DType::kInt64: {
      const auto i = static_cast<std::int64_t>(v);
      std::memcpy(p, &i, 8);
      break;
    }
    case DType::kUInt8:
      *p = static_cast<std::byte>(static_cast<unsigned>(v));
      break;
    case DType::kFloat16:
    case DType::kBFloat16: {
      // v = k / 64 with |k| <= 64: exact in both formats.
      const float f = static_cast<float>(v);
      std::uint32_t bits;
      std::memcpy(&bits, &f, 4);
      std::uint16_t out;
      if (t == DType::kBFloat16) {
        out = static_cast<std::uint16_t>(bits >> 16);
      } else if (f == 0.0f) {
        out = static_cast<std::uint16_t>((bits >> 16) & 0x8000);
      } else {
        const int exp = static_cast<int>((bits >> 23) & 0xff) - 127;  // normal in binary16 for |v| >= 2^-6
        out = static_cast<std::uint16_t>(((bits >> 16) & 0x8000) | ((exp + 15) << 10) | ((bits >> 13) & 0x3ff));
      }
      std::memcpy(p, &out, 2);
      break;
    }
  }
}

}  // namespace sgtest::elements
