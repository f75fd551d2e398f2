// stepgraph/core/error.h — the exception types of the public C++ boundary.
//
// Ownership: value types. Thread-safety: immutable once thrown.
// Capture: may be thrown during stream capture; the call that throws says
// whether it invalidated the capture.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace stepgraph {

/// Base of every exception stepgraph throws. The message names the object,
/// the device where it matters, and what to do next.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// The caller passed something the call cannot accept.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

/// The object is not in a state where the call is allowed (a capture that
/// was invalidated, an executor that failed, a buffer already freed, ...).
class InvalidState : public Error {
 public:
  using Error::Error;
};

/// A failure the device reported (a fault of a kernel, a lost device).
/// On both backends a device fault is sticky: every later operation on that
/// device throws DeviceFault too.
class DeviceFault : public Error {
 public:
  explicit DeviceFault(const std::string& what, std::string node = {}) : Error(what), node_(std::move(node)) {}
  /// The graph node or operation that faulted, where the backend can know
  /// it (always on the host backend; never on CUDA, whose faults are
  /// asynchronous). Empty if unknown.
  [[nodiscard]] const std::string& node() const noexcept { return node_; }

 private:
  std::string node_;
};

/// A CUDA runtime call failed; `code()` is the cudaError_t value.
class CudaError : public Error {
 public:
  CudaError(const std::string& what, int code) : Error(what), code_(code) {}
  [[nodiscard]] int code() const noexcept { return code_; }

 private:
  int code_;
};

class NcclError : public Error {
 public:
  NcclError(const std::string& what, int code) : Error(what), code_(code) {}
  [[nodiscard]] int code() const noexcept { return code_; }

 private:
  int code_;
};

class HwlocError : public Error {
 public:
  using Error::Error;
};

class MpiError : public Error {
 public:
  MpiError(const std::string& what, int code) : Error(what), code_(code) {}
  [[nodiscard]] int code() const noexcept { return code_; }

 private:
  int code_;
};

/// A wait that did not finish within its deadline.
class Timeout : public Error {
 public:
  using Error::Error;
};

namespace detail {
[[noreturn]] void internal_assert_failed(const char* expr, const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace stepgraph

/// Caller errors: throws `Type` (an InvalidArgument or InvalidState) with a
/// formatted message when `cond` is false. Kept apart from internal asserts.
#define STEPGRAPH_CHECK(cond, Type, ...)                              \
  do {                                                                \
    if (!(cond)) throw ::stepgraph::Type(::fmt::format(__VA_ARGS__)); \
  } while (0)

/// Internal invariants: a failure is a bug in stepgraph, not a caller error.
#define STEPGRAPH_INTERNAL_ASSERT(cond, ...)                                                                 \
  do {                                                                                                       \
    if (!(cond))                                                                                             \
      ::stepgraph::detail::internal_assert_failed(#cond, __FILE__, __LINE__, ::fmt::format("" __VA_ARGS__)); \
  } while (0)
