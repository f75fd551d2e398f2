// The metrics registry: the Prometheus text format against hand-written
// expectations, naming rules, callback gauges, concurrent updates.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include <stepgraph/core/error.h>
#include <stepgraph/runtime/metrics.h>

namespace rt = stepgraph::runtime;

TEST(MetricsRegistry, RendersTheTextFormatWithHelpTypeAndSortedSeries) {
  auto r = rt::MetricsRegistry::create();
  r->counter("app_requests_total", "Requests served", {{"code", "500"}}).inc(2);
  r->counter("app_requests_total", "Requests served", {{"code", "200"}}).inc(3);
  r->gauge("app_temperature_celsius", "Temperature\nof \\the room").set(-1.5);
  auto& h = r->histogram("app_latency_seconds", "Latency", {0.25, 1.0});
  h.observe(0.125);
  h.observe(0.25);  // le is inclusive
  h.observe(0.5);
  h.observe(7);
  r->gauge("app_info", "Labels to escape", {{"path", "a\"b\\c\nd"}, {"a", "x"}}).set(1);
  const std::string expected =
      "# HELP app_info Labels to escape\n"
      "# TYPE app_info gauge\n"
      "app_info{a=\"x\",path=\"a\\\"b\\\\c\\nd\"} 1\n"
      "# HELP app_latency_seconds Latency\n"
      "# TYPE app_latency_seconds histogram\n"
      "app_latency_seconds_bucket{le=\"0.25\"} 2\n"
      "app_latency_seconds_bucket{le=\"1\"} 3\n"
      "app_latency_seconds_bucket{le=\"+Inf\"} 4\n"
      "app_latency_seconds_sum 7.875\n"
      "app_latency_seconds_count 4\n"
      "# HELP app_requests_total Requests served\n"
      "# TYPE app_requests_total counter\n"
      "app_requests_total{code=\"200\"} 3\n"
      "app_requests_total{code=\"500\"} 2\n"
      "# HELP app_temperature_celsius Temperature\\nof \\\\the room\n"
      "# TYPE app_temperature_celsius gauge\n"
      "app_temperature_celsius -1.5\n";
  EXPECT_EQ(r->render(), expected);
}

TEST(MetricsRegistry, HistogramWithLabelsPutsLeLast) {
  auto r = rt::MetricsRegistry::create();
  r->histogram("x_seconds", "X", {1}, {{"op", "sum"}}).observe(2);
  EXPECT_EQ(r->render(),
            "# HELP x_seconds X\n# TYPE x_seconds histogram\n"
            "x_seconds_bucket{op=\"sum\",le=\"1\"} 0\n"
            "x_seconds_bucket{op=\"sum\",le=\"+Inf\"} 1\n"
            "x_seconds_sum{op=\"sum\"} 2\n"
            "x_seconds_count{op=\"sum\"} 1\n");
}

TEST(MetricsRegistry, SameNameAndLabelsGiveTheSameSeries) {
  auto r = rt::MetricsRegistry::create();
  auto& a = r->counter("c_total", "C", {{"k", "v"}});
  auto& b = r->counter("c_total", "C", {{"k", "v"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &r->counter("c_total", "C", {{"k", "w"}}));
  EXPECT_EQ(&r->gauge("g", "G"), &r->gauge("g", "G"));
}

TEST(MetricsRegistry, RejectsNamesAgainstPrometheusConventions) {
  auto r = rt::MetricsRegistry::create();
  EXPECT_THROW((void)r->counter("steps", "no _total"), stepgraph::InvalidArgument);
  EXPECT_THROW((void)r->gauge("steps_total", "a gauge ending in _total"), stepgraph::InvalidArgument);
  EXPECT_THROW((void)r->gauge("2bad", "starts with a digit"), stepgraph::InvalidArgument);
  EXPECT_THROW((void)r->gauge("bad-name", "dash"), stepgraph::InvalidArgument);
  EXPECT_THROW((void)r->gauge("ok", "label", {{"__reserved", "x"}}), stepgraph::InvalidArgument);
  EXPECT_THROW((void)r->gauge("ok", "label", {{"le", "x"}}), stepgraph::InvalidArgument);
  EXPECT_THROW((void)r->gauge("ok", "label", {{"a", "x"}, {"a", "y"}}), stepgraph::InvalidArgument);
  EXPECT_THROW((void)r->gauge("ok", ""), stepgraph::InvalidArgument);
  (void)r->gauge("ok", "help");
  EXPECT_THROW((void)r->gauge("ok", "other help"), stepgraph::InvalidArgument);
  EXPECT_THROW((void)r->histogram("ok", "help", {1}), stepgraph::InvalidArgument);  // a gauge already
  EXPECT_THROW((void)r->histogram("h", "H", {2, 1}), stepgraph::InvalidArgument);
  (void)r->histogram("h2", "H", {1, 2});
  EXPECT_THROW((void)r->histogram("h2", "H", {1, 3}, {{"a", "b"}}), stepgraph::InvalidArgument);
}

TEST(MetricsRegistry, CounterIgnoresNegativeIncrements) {
  rt::Counter c;
  c.inc(2);
  c.inc(-1);
  EXPECT_EQ(c.value(), 2);
}

TEST(MetricsRegistry, CallbackGaugesAreComputedAtScrapeAndRemovedWithTheirHandle) {
  auto r = rt::MetricsRegistry::create();
  double v = 1;
  {
    auto h = r->gauge_callback("cb_bytes", "CB", {{"device", "0"}}, [&]() -> std::optional<double> { return v; });
    auto h2 = r->gauge_callback("cb_bytes", "CB", {{"device", "0"}}, [] { return std::optional<double>(99); });
    EXPECT_EQ(r->render(), "# HELP cb_bytes CB\n# TYPE cb_bytes gauge\ncb_bytes{device=\"0\"} 1\n");
    v = 5;
    EXPECT_NE(r->render().find("cb_bytes{device=\"0\"} 5\n"), std::string::npos);
    h.reset();  // the second registration now gives the value
    EXPECT_NE(r->render().find("cb_bytes{device=\"0\"} 99\n"), std::string::npos);
    rt::CallbackHandle moved = std::move(h2);
    EXPECT_FALSE(h2.valid());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
    EXPECT_TRUE(moved.valid());
    moved = std::move(moved);  // self-move keeps it
    EXPECT_TRUE(moved.valid());
  }
  EXPECT_EQ(r->render(), "");  // a family with no series is left out
  auto none = r->gauge_callback("opt", "Optional", {}, [] { return std::optional<double>(); });
  EXPECT_EQ(r->render(), "");
  EXPECT_THROW((void)r->gauge("opt", "Optional"), stepgraph::InvalidArgument);  // computed by a callback
}

TEST(MetricsRegistry, HandleOutlivingItsRegistryIsHarmless) {
  rt::CallbackHandle h;
  {
    auto r = rt::MetricsRegistry::create();
    h = r->gauge_callback("g", "G", {}, [] { return std::optional<double>(1); });
  }
  EXPECT_FALSE(h.valid());
  h.reset();
}

TEST(MetricsRegistry, ConcurrentUpdatesLoseNothing) {
  auto r = rt::MetricsRegistry::create();
  auto& c = r->counter("n_total", "N");
  auto& g = r->gauge("g", "G");
  auto& h = r->histogram("h_seconds", "H", rt::Histogram::exponential_bounds(1, 2, 4));
  constexpr int kThreads = 4, kEach = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        c.inc();
        g.add(t % 2 == 0 ? 1 : -1);
        h.observe(static_cast<double>(i % 10));
        if (i % 5000 == 0) (void)r->render();  // a scrape in the middle
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.value(), kThreads * kEach);
  EXPECT_EQ(g.value(), 0);
  EXPECT_EQ(h.count(), static_cast<std::uint64_t>(kThreads * kEach));
  // i % 10 over 0..9: buckets le 1 {0,1}, le 2 {2}, le 4 {3,4}, le 8 {5..8}, +Inf {9}
  const auto b = h.bucket_counts();
  const std::uint64_t per = kThreads * kEach / 10;
  EXPECT_EQ(b, (std::vector<std::uint64_t>{2 * per, per, 2 * per, 4 * per, per}));
  EXPECT_EQ(h.sum(), static_cast<double>(kThreads) * (kEach / 10) * 45);
}
