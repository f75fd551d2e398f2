#include <stepgraph/core/env.h>

#include <charconv>
#include <cstdlib>
#include <mutex>

#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

namespace stepgraph::env {
namespace {
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::vector<ParamInfo>& registry() {
  static std::vector<ParamInfo> r;
  return r;
}
}  // namespace

std::vector<ParamInfo> declared() {
  std::lock_guard lock(registry_mutex());
  std::vector<ParamInfo> out = registry();
  for (auto& p : out) p.current = detail::raw(p.name);
  return out;
}

namespace detail {

void declare(const std::string& name, const std::string& default_value, const std::string& help) {
  std::lock_guard lock(registry_mutex());
  for (const auto& p : registry())
    if (p.name == name) return;
  registry().push_back(ParamInfo{name, default_value, help, std::nullopt});
}

std::optional<std::string> raw(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

void note_override(const std::string& name, const std::string& value) {
  STEPGRAPH_INFO(kCore, "{}={} overrides the default", name, value);
}

template <>
int parse<int>(const std::string& name, const std::string& text) {
  int v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  STEPGRAPH_CHECK(ec == std::errc() && p == text.data() + text.size(), InvalidArgument,
                  "{}={} is not an integer; unset it or give a whole number", name, text);
  return v;
}
template <>
std::uint64_t parse<std::uint64_t>(const std::string& name, const std::string& text) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  STEPGRAPH_CHECK(ec == std::errc() && p == text.data() + text.size(), InvalidArgument,
                  "{}={} is not a non-negative integer; unset it or give one", name, text);
  return v;
}
template <>
double parse<double>(const std::string& name, const std::string& text) {
  try {
    std::size_t used = 0;
    double v = std::stod(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw InvalidArgument(fmt::format("{}={} is not a number; unset it or give one", name, text));
}
template <>
bool parse<bool>(const std::string& name, const std::string& text) {
  if (text == "1" || text == "true" || text == "on" || text == "yes") return true;
  if (text == "0" || text == "false" || text == "off" || text == "no") return false;
  throw InvalidArgument(fmt::format("{}={} is not a boolean; use 1/0, true/false, on/off", name, text));
}
template <>
std::string parse<std::string>(const std::string&, const std::string& text) {
  return text;
}

template <>
std::string to_text<int>(const int& v) {
  return std::to_string(v);
}
template <>
std::string to_text<std::uint64_t>(const std::uint64_t& v) {
  return std::to_string(v);
}
template <>
std::string to_text<double>(const double& v) {
  return fmt::format("{}", v);
}
template <>
std::string to_text<bool>(const bool& v) {
  return v ? "1" : "0";
}
template <>
std::string to_text<std::string>(const std::string& v) {
  return v;
}

}  // namespace detail
}  // namespace stepgraph::env
