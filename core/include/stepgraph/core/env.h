// stepgraph/core/env.h — typed STEPGRAPH_* environment parameters.
//
// Each parameter is declared where it is used:
//   static const stepgraph::env::Param<int> kWorkers{"STEPGRAPH_HOST_WORKERS", 2,
//                                                     "worker threads per host device"};
// Reading it parses the variable once; a value that overrides the default is
// logged; a value that does not parse throws InvalidArgument naming the
// variable. `stepgraph env` lists every declared parameter.
//
// Thread-safety: get() is thread-safe. Capture: safe (no CUDA calls).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace stepgraph::env {

struct ParamInfo {
  std::string name;
  std::string default_value;
  std::string help;
  std::optional<std::string> current;  // the environment's value, if set
};

/// Every parameter declared so far in this process (in declaration order).
[[nodiscard]] std::vector<ParamInfo> declared();

namespace detail {
void declare(const std::string& name, const std::string& default_value, const std::string& help);
std::optional<std::string> raw(const std::string& name);
void note_override(const std::string& name, const std::string& value);
template <class T>
T parse(const std::string& name, const std::string& text);
template <class T>
std::string to_text(const T& value);
}  // namespace detail

template <class T>
class Param {
 public:
  Param(std::string name, T default_value, std::string help)
      : name_(std::move(name)), default_(std::move(default_value)) {
    detail::declare(name_, detail::to_text(default_), help);
  }
  Param(const Param&) = delete;
  Param& operator=(const Param&) = delete;

  /// The value from the environment, else the default.
  [[nodiscard]] T get() const {
    std::call_once(once_, [this] {
      if (auto text = detail::raw(name_)) {
        value_ = detail::parse<T>(name_, *text);
        detail::note_override(name_, *text);
      } else {
        value_ = default_;
      }
    });
    return *value_;
  }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  std::string name_;
  T default_;
  mutable std::once_flag once_;
  mutable std::optional<T> value_;
};

}  // namespace stepgraph::env
