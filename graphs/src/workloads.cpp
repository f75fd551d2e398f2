#include <stepgraph/graphs/workloads.h>

#include <algorithm>
#include <cmath>
#include <random>

#include <fmt/format.h>
#include <stepgraph/core/error.h>

namespace stepgraph::graphs {

StepGraph make_transformer(const TransformerSpec& s) {
  STEPGRAPH_CHECK(s.layers >= 1 && s.hidden >= 1 && s.seq >= 1 && s.batch >= 1 && s.bytes_per_element >= 1,
                  InvalidArgument, "transformer: layers, hidden, seq, batch and bytes_per_element must be >= 1");
  STEPGRAPH_CHECK(s.gpu_tflops > 0 && s.cpu_tflops > 0, InvalidArgument,
                  "transformer: gpu_tflops and cpu_tflops must be > 0");
  const double h = s.hidden, tokens = static_cast<double>(s.seq) * s.batch;
  const double params = 12.0 * h * h;  // QKV + proj (4h²) + MLP (8h²)
  const double fwd_flops = 2.0 * params * tokens + 4.0 * s.seq * h * tokens;
  const auto us = [&](double flops) {
    return DeviceCosts::gpu_cpu(flops / (s.gpu_tflops * 1e6), flops / (s.cpu_tflops * 1e6));
  };
  const auto act_bytes = static_cast<std::uint64_t>(tokens * h * s.bytes_per_element);
  const auto w_bytes = static_cast<std::uint64_t>(params * s.bytes_per_element);
  StepGraph g;
  const int L = s.layers;
  std::vector<BufferId> act(L + 1), dact(L + 1), w(L), grad(L);
  for (int l = 0; l <= L; ++l) {
    act[l] = g.add_buffer(fmt::format("act{}", l), act_bytes);
    dact[l] = g.add_buffer(fmt::format("dact{}", l), act_bytes);
  }
  for (int l = 0; l < L; ++l) {
    w[l] = g.add_buffer(fmt::format("w{}", l), w_bytes);
    grad[l] = g.add_buffer(fmt::format("grad{}", l), w_bytes);
  }
  auto rd = [](BufferId b, std::uint64_t n) { return BufferAccess{b, 0, n, AccessMode::kRead}; };
  auto wr = [](BufferId b, std::uint64_t n) { return BufferAccess{b, 0, n, AccessMode::kWrite}; };
  auto rw = [](BufferId b, std::uint64_t n) { return BufferAccess{b, 0, n, AccessMode::kReadWrite}; };
  std::vector<NodeId> fwd(L), bwd_in(L), bwd_w(L), ar(L), opt(L);
  for (int l = 0; l < L; ++l) {
    fwd[l] = g.add_kernel(fmt::format("fwd{}", l), us(fwd_flops),
                          {rd(act[l], act_bytes), rd(w[l], w_bytes), wr(act[l + 1], act_bytes)});
    if (l > 0) g.connect(fwd[l - 1], fwd[l]);
  }
  const NodeId loss = g.add_kernel("loss", us(10.0 * tokens * h), {rd(act[L], act_bytes), wr(dact[L], act_bytes)});
  g.connect(fwd[L - 1], loss);
  for (int l = L - 1; l >= 0; --l) {
    bwd_in[l] =
        g.add_kernel(fmt::format("bwd_in{}", l), us(fwd_flops),
                     {rd(dact[l + 1], act_bytes), rd(w[l], w_bytes), rd(act[l], act_bytes), wr(dact[l], act_bytes)});
    bwd_w[l] = g.add_kernel(fmt::format("bwd_w{}", l), us(fwd_flops),
                            {rd(dact[l + 1], act_bytes), rd(act[l], act_bytes), wr(grad[l], w_bytes)});
    const NodeId producer = l == L - 1 ? loss : bwd_in[l + 1];
    g.connect(producer, bwd_in[l]);
    g.connect(producer, bwd_w[l]);
    // Backward re-reads the layer's saved input act[l] (written by fwd[l-1]).
    if (l > 0) {
      g.connect(fwd[l - 1], bwd_in[l]);
      g.connect(fwd[l - 1], bwd_w[l]);
    }
    ar[l] = g.add_collective(fmt::format("allreduce{}", l), CollectiveSpec{CollectiveOp::kAllReduce, w_bytes},
                             {rw(grad[l], w_bytes)});
    g.connect(bwd_w[l], ar[l]);
    // Adam: ~10 flops per parameter, memory bound; counted as flops here.
    opt[l] = g.add_kernel(fmt::format("opt{}", l), us(10.0 * params), {rd(grad[l], w_bytes), rw(w[l], w_bytes)});
    g.connect(ar[l], opt[l]);
    g.connect(bwd_in[l], opt[l], 0);  // w[l] is read by bwd_in before the update
  }
  return g;
}

StepGraph make_random_dag(const RandomDagSpec& s) {
  STEPGRAPH_CHECK(s.nodes >= 1, InvalidArgument, "random dag: nodes must be >= 1");
  STEPGRAPH_CHECK(s.shape > 0 && s.out_degree >= 1 && s.ccr >= 0 && s.heterogeneity >= 0 && s.heterogeneity < 2 &&
                      s.mean_cost_us > 0 && s.reference_bandwidth_gbps > 0,
                  InvalidArgument,
                  "random dag: need shape > 0, out_degree >= 1, ccr >= 0, 0 <= heterogeneity < 2, "
                  "mean_cost_us > 0, reference_bandwidth_gbps > 0");
  std::mt19937_64 rng(s.seed);
  const std::size_t v = s.nodes;
  const auto height = std::clamp<std::size_t>(
      static_cast<std::size_t>(std::llround(std::sqrt(static_cast<double>(v)) / s.shape)), 1, v);
  // Level sizes: one node per level, the rest uniformly over levels (mean
  // width v / height = α·sqrt(v)).
  std::vector<std::size_t> width(height, 1);
  std::uniform_int_distribution<std::size_t> pick_level(0, height - 1);
  for (std::size_t i = height; i < v; ++i) ++width[pick_level(rng)];
  std::vector<std::size_t> level_begin(height + 1, 0);
  for (std::size_t l = 0; l < height; ++l) level_begin[l + 1] = level_begin[l] + width[l];

  StepGraph g;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const double beta = s.heterogeneity;
  for (std::size_t i = 0; i < v; ++i) {
    const double wbar = std::max(0.01 * s.mean_cost_us, unit(rng) * 2.0 * s.mean_cost_us);
    DeviceCosts c;
    for (auto k : {DeviceKind::kGpu, DeviceKind::kCpu}) {
      const double f = beta > 0 ? (1.0 - beta / 2) + unit(rng) * beta : 1.0;
      c.set(k, wbar * f);
    }
    NodeSpec spec;
    spec.name = fmt::format("t{}", i);
    spec.cost = c;
    g.add_node(std::move(spec));
  }
  // Mean edge bytes: CCR × w_dag µs at the reference bandwidth (bytes/µs = GB/s × 1e3).
  const double mean_bytes = s.ccr * s.mean_cost_us * s.reference_bandwidth_gbps * 1e3;
  auto draw_bytes = [&] { return static_cast<std::uint64_t>(unit(rng) * 2.0 * mean_bytes); };
  std::vector<bool> has_pred(v, false);
  std::vector<NodeId> chosen;
  for (std::size_t l = 0; l + 1 < height; ++l) {
    for (std::size_t i = level_begin[l]; i < level_begin[l + 1]; ++i) {
      chosen.clear();
      for (int k = 0; k < s.out_degree; ++k) {
        const std::size_t jump = (l + 2 < height && unit(rng) < 0.25) ? 2 : 1;
        const std::size_t lo = level_begin[l + jump], hi = level_begin[l + jump + 1];
        const auto dst = static_cast<NodeId>(lo + static_cast<std::size_t>(unit(rng) * static_cast<double>(hi - lo)));
        if (std::find(chosen.begin(), chosen.end(), dst) != chosen.end()) continue;
        chosen.push_back(dst);
        has_pred[dst] = true;
        g.connect(static_cast<NodeId>(i), dst, draw_bytes());
      }
    }
  }
  // Every node below the first level has a predecessor on the level above.
  for (std::size_t l = 1; l < height; ++l)
    for (std::size_t i = level_begin[l]; i < level_begin[l + 1]; ++i)
      if (!has_pred[i]) {
        const std::size_t lo = level_begin[l - 1], hi = level_begin[l];
        const auto src = static_cast<NodeId>(lo + static_cast<std::size_t>(unit(rng) * static_cast<double>(hi - lo)));
        g.connect(src, static_cast<NodeId>(i), draw_bytes());
      }
  return g;
}

StepGraph make_fork_join(const ForkJoinSpec& s) {
  STEPGRAPH_CHECK(s.stages >= 1 && s.width >= 1 && s.cost_us >= 0, InvalidArgument,
                  "fork-join: stages and width must be >= 1 and cost_us >= 0");
  StepGraph g;
  NodeId prev = g.add_kernel("fork0", DeviceCosts::uniform(s.cost_us));
  for (int st = 0; st < s.stages; ++st) {
    const NodeId join = g.add_kernel(fmt::format("join{}", st), DeviceCosts::uniform(s.cost_us));
    for (int k = 0; k < s.width; ++k) {
      const NodeId w = g.add_kernel(fmt::format("s{}w{}", st, k), DeviceCosts::uniform(s.cost_us));
      g.connect(prev, w, s.bytes);
      g.connect(w, join, s.bytes);
    }
    prev = join;
  }
  return g;
}

}  // namespace stepgraph::graphs
