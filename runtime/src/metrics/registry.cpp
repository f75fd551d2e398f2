// The metrics registry and the Prometheus text format (metrics.h).
#include <stepgraph/runtime/metrics.h>

#include <algorithm>
#include <cmath>
#include <variant>

#include <fmt/format.h>

#include <stepgraph/core/error.h>

namespace stepgraph::runtime {

std::string_view to_string(MetricType t) noexcept {
  switch (t) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "?";
}

// ------------------------------------------------------------------ histogram

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    STEPGRAPH_CHECK(std::isfinite(bounds_[i]), InvalidArgument,
                    "Histogram: bound #{} is {}; give finite bounds (+Inf is implicit)", i, bounds_[i]);
    STEPGRAPH_CHECK(i == 0 || bounds_[i - 1] < bounds_[i], InvalidArgument,
                    "Histogram: bounds must increase strictly ({} then {})", i == 0 ? 0.0 : bounds_[i - 1], bounds_[i]);
  }
  buckets_ = std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1);
}

void Histogram::observe(double v) noexcept {
  // The first bucket whose upper bound holds v; NaN lands in +Inf.
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  buckets_[static_cast<std::size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<std::uint64_t> Histogram::bucket_counts() const {
  std::vector<std::uint64_t> out(bounds_.size() + 1);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

std::uint64_t Histogram::count() const {
  std::uint64_t n = 0;
  for (auto c : bucket_counts()) n += c;
  return n;
}

std::vector<double> Histogram::exponential_bounds(double start, double factor, int count) {
  STEPGRAPH_CHECK(start > 0 && factor > 1 && count >= 1, InvalidArgument,
                  "Histogram::exponential_bounds({}, {}, {}): give start > 0, factor > 1, count >= 1", start, factor,
                  count);
  std::vector<double> b;
  for (int i = 0; i < count; ++i) b.push_back(start * std::pow(factor, i));
  return b;
}

// ------------------------------------------------------------------ registry

struct MetricsRegistry::Family {
  std::string name;
  std::string help;
  MetricType type = MetricType::kCounter;
  std::vector<double> bounds;  // histograms
  /// Registrations of one callback series, oldest first: the oldest gives
  /// the value (several executors on one device register the same gauge).
  struct Callback {
    std::vector<std::pair<std::uint64_t, std::function<std::optional<double>()>>> fns;
  };
  using Series = std::variant<std::unique_ptr<Counter>, std::unique_ptr<Gauge>, std::unique_ptr<Histogram>, Callback>;
  std::map<std::string, Series> series;  // by rendered labels ("" or {a="b",...})
};

namespace {

bool valid_metric_name(std::string_view s) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool valid_label_name(std::string_view s) {
  return valid_metric_name(s) && s.find(':') == std::string_view::npos && !s.starts_with("__");
}

std::string escape(std::string_view s, bool quotes) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"' && quotes)
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

/// `{a="x",b="y"}` (labels sorted by name), or "" without labels.
std::string render_labels(std::string_view metric, MetricLabels labels) {
  if (labels.empty()) return {};
  std::sort(labels.begin(), labels.end());
  std::string out = "{";
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const auto& [k, v] = labels[i];
    STEPGRAPH_CHECK(valid_label_name(k), InvalidArgument,
                    "metric '{}': label name '{}' is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not "
                    "starting with __)",
                    metric, k);
    STEPGRAPH_CHECK(i == 0 || labels[i - 1].first != k, InvalidArgument, "metric '{}': label '{}' given twice", metric,
                    k);
    STEPGRAPH_CHECK(k != "le" && k != "quantile", InvalidArgument,
                    "metric '{}': the label name '{}' is reserved by Prometheus", metric, k);
    if (i) out += ',';
    out += fmt::format("{}=\"{}\"", k, escape(v, true));
  }
  return out + "}";
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

/// Labels `extra` (already rendered, e.g. le="0.1") appended to `labels`.
std::string with_label(const std::string& labels, const std::string& extra) {
  if (labels.empty()) return "{" + extra + "}";
  return labels.substr(0, labels.size() - 1) + "," + extra + "}";
}

}  // namespace

std::shared_ptr<MetricsRegistry> MetricsRegistry::create() {
  return std::shared_ptr<MetricsRegistry>(new MetricsRegistry());
}

MetricsRegistry::Family& MetricsRegistry::family(std::string_view name, std::string_view help, MetricType type) {
  STEPGRAPH_CHECK(valid_metric_name(name), InvalidArgument,
                  "'{}' is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", name);
  STEPGRAPH_CHECK(type != MetricType::kCounter || name.ends_with("_total"), InvalidArgument,
                  "counter '{}': a counter's name ends in _total (Prometheus naming conventions)", name);
  STEPGRAPH_CHECK(type == MetricType::kCounter || !name.ends_with("_total"), InvalidArgument,
                  "{} '{}': only counters end in _total", to_string(type), name);
  STEPGRAPH_CHECK(!help.empty(), InvalidArgument, "metric '{}' has no help text; say what it counts and in what unit",
                  name);
  auto it = families_.find(name);
  if (it == families_.end()) {
    auto f = std::make_unique<Family>();
    f->name = std::string(name);
    f->help = std::string(help);
    f->type = type;
    it = families_.emplace(f->name, std::move(f)).first;
  }
  Family& f = *it->second;
  STEPGRAPH_CHECK(f.type == type, InvalidArgument, "metric '{}' is a {}; it cannot also be a {}", name,
                  to_string(f.type), to_string(type));
  STEPGRAPH_CHECK(f.help == help, InvalidArgument, "metric '{}' is registered with another help text ('{}')", name,
                  f.help);
  return f;
}

Counter& MetricsRegistry::counter(std::string_view name, std::string_view help, const MetricLabels& labels) {
  const auto key = render_labels(name, labels);  // checked before anything is registered
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, MetricType::kCounter);
  auto& s = f.series[key];
  if (!std::holds_alternative<std::unique_ptr<Counter>>(s) || !std::get<std::unique_ptr<Counter>>(s))
    s = std::make_unique<Counter>();
  return *std::get<std::unique_ptr<Counter>>(s);
}

Gauge& MetricsRegistry::gauge(std::string_view name, std::string_view help, const MetricLabels& labels) {
  const auto key = render_labels(name, labels);
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, MetricType::kGauge);
  auto it = f.series.find(key);
  if (it != f.series.end()) {
    auto* g = std::get_if<std::unique_ptr<Gauge>>(&it->second);
    STEPGRAPH_CHECK(g != nullptr, InvalidArgument, "gauge '{}{}' is computed by a callback; it cannot also be set",
                    name, key);
    return **g;
  }
  auto g = std::make_unique<Gauge>();
  auto& ref = *g;
  f.series.emplace(key, std::move(g));
  return ref;
}

Histogram& MetricsRegistry::histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                                      const MetricLabels& labels) {
  const auto key = render_labels(name, labels);
  Histogram checked(bounds);  // throws for bad bounds before anything is registered
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, MetricType::kHistogram);
  if (f.series.empty()) f.bounds = bounds;
  STEPGRAPH_CHECK(f.bounds == bounds, InvalidArgument, "histogram '{}' is registered with other bucket bounds", name);
  auto& s = f.series[key];
  if (!std::holds_alternative<std::unique_ptr<Histogram>>(s) || !std::get<std::unique_ptr<Histogram>>(s))
    s = std::make_unique<Histogram>(std::move(bounds));
  return *std::get<std::unique_ptr<Histogram>>(s);
}

CallbackHandle MetricsRegistry::gauge_callback(std::string_view name, std::string_view help, const MetricLabels& labels,
                                               std::function<std::optional<double>()> fn) {
  STEPGRAPH_CHECK(static_cast<bool>(fn), InvalidArgument, "gauge_callback('{}'): the callback is empty", name);
  const auto key = render_labels(name, labels);
  std::lock_guard lock(mutex_);
  auto& f = family(name, help, MetricType::kGauge);
  auto it = f.series.find(key);
  if (it == f.series.end()) it = f.series.emplace(key, Family::Callback{}).first;
  auto* cb = std::get_if<Family::Callback>(&it->second);
  STEPGRAPH_CHECK(cb != nullptr, InvalidArgument, "gauge '{}{}' is set directly; it cannot also have a callback", name,
                  key);
  const std::uint64_t id = ++next_callback_;
  cb->fns.emplace_back(id, std::move(fn));
  CallbackHandle h;
  h.registry_ = weak_from_this();
  h.id_ = id;
  return h;
}

void MetricsRegistry::remove_callback(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  for (auto& [name, f] : families_)
    for (auto it = f->series.begin(); it != f->series.end(); ++it)
      if (auto* cb = std::get_if<Family::Callback>(&it->second)) {
        if (std::erase_if(cb->fns, [id](const auto& e) { return e.first == id; }) == 0) continue;
        if (cb->fns.empty()) f->series.erase(it);
        return;
      }
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, f] : families_) {
    std::string body;
    for (const auto& [labels, s] : f->series) {
      if (const auto* c = std::get_if<std::unique_ptr<Counter>>(&s)) {
        body += fmt::format("{}{} {}\n", name, labels, number((*c)->value()));
      } else if (const auto* g = std::get_if<std::unique_ptr<Gauge>>(&s)) {
        body += fmt::format("{}{} {}\n", name, labels, number((*g)->value()));
      } else if (const auto* cb = std::get_if<Family::Callback>(&s)) {
        std::optional<double> v;
        try {
          if (!cb->fns.empty()) v = cb->fns.front().second();
        } catch (const std::exception&) {
          v.reset();  // a failing source leaves its series out of this scrape
        }
        if (v) body += fmt::format("{}{} {}\n", name, labels, number(*v));
      } else if (const auto* h = std::get_if<std::unique_ptr<Histogram>>(&s)) {
        const auto counts = (*h)->bucket_counts();
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i < counts.size(); ++i) {
          cumulative += counts[i];
          const std::string le = i < f->bounds.size() ? number(f->bounds[i]) : "+Inf";
          body += fmt::format("{}_bucket{} {}\n", name, with_label(labels, "le=\"" + le + "\""), cumulative);
        }
        body += fmt::format("{}_sum{} {}\n", name, labels, number((*h)->sum()));
        body += fmt::format("{}_count{} {}\n", name, labels, cumulative);
      }
    }
    if (body.empty()) continue;  // a family of callbacks that all declined
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape(f->help, false), name, to_string(f->type));
    out += body;
  }
  return out;
}

// ------------------------------------------------------------------ handle

CallbackHandle::CallbackHandle(CallbackHandle&& o) noexcept : registry_(std::move(o.registry_)), id_(o.id_) {
  o.registry_.reset();
  o.id_ = 0;
}

CallbackHandle& CallbackHandle::operator=(CallbackHandle&& o) noexcept {
  if (this != &o) {
    reset();
    registry_ = std::move(o.registry_);
    id_ = o.id_;
    o.registry_.reset();
    o.id_ = 0;
  }
  return *this;
}

CallbackHandle::~CallbackHandle() {
  reset();
}

void CallbackHandle::reset() {
  if (auto r = registry_.lock()) r->remove_callback(id_);
  registry_.reset();
  id_ = 0;
}

}  // namespace stepgraph::runtime
