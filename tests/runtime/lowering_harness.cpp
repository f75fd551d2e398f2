#include "lowering_harness.h"

#include <cstring>
#include <set>
#include <string>

#include <stepgraph/core/error.h>

#include "lowering_kernels.h"

namespace sgtest::lowering {

g::StepGraph with_dataflow(const g::StepGraph& shape, std::uint64_t elems) {
  constexpr std::uint64_t kWord = sizeof(std::uint64_t);
  constexpr std::uint64_t kSlots = 4;
  g::StepGraph out;
  const auto n = static_cast<std::uint64_t>(shape.node_count());
  const std::uint64_t slice = elems * kWord;
  const g::BufferId act = out.add_buffer("act", n * slice);
  const g::BufferId x = out.add_buffer("x", 8 * slice);
  const g::BufferId acc = out.add_buffer("acc", kSlots * slice);
  std::vector<std::vector<g::NodeId>> preds(shape.node_count());
  for (const auto& e : shape.edges()) preds[e.dst].push_back(e.src);
  for (const auto& node : shape.nodes()) {
    g::NodeSpec spec;
    spec.name = node.name;
    spec.cost = node.cost;
    const std::uint64_t i = node.id;
    spec.accesses.push_back({act, i * slice, slice, g::AccessMode::kWrite});
    spec.accesses.push_back({x, (i % 8) * slice, slice, g::AccessMode::kRead});
    for (g::NodeId p : preds[node.id]) {
      const std::uint64_t bytes = (p + node.id) % 2 == 0 ? slice : slice / 2;
      spec.accesses.push_back({act, p * slice, bytes, g::AccessMode::kRead});
    }
    if (i % 3 == 0) spec.accesses.push_back({acc, ((i / 3) % kSlots) * slice, slice, g::AccessMode::kReadWrite});
    out.add_node(std::move(spec));
  }
  for (const auto& e : shape.edges()) out.connect(e.src, e.dst, e.bytes);
  // Chain the acc users of each slot in one topological order.
  std::vector<g::NodeId> last(kSlots, g::kNoNode);
  std::set<std::pair<g::NodeId, g::NodeId>> have;
  for (const auto& e : shape.edges()) have.emplace(e.src, e.dst);
  for (g::NodeId v : g::topological_order(shape)) {
    if (v % 3 != 0) continue;
    auto& l = last[(v / 3) % kSlots];
    if (l != g::kNoNode && !have.count({l, v})) out.connect(l, v, slice);
    l = v;
  }
  return out;
}

g::Platform cpu_platform(int count) {
  std::vector<g::Device> devices;
  for (int i = 0; i < count; ++i) devices.push_back({"numa" + std::to_string(i), g::DeviceKind::kCpu, 1.0, i});
  g::Platform p(devices, g::Link{10.0, 5.0});
  for (int a = 0; a + 1 < count; a += 2)
    p.set_link(static_cast<std::size_t>(a), static_cast<std::size_t>(a + 1), g::Link{40.0, 1.0});
  return p;
}

g::Placement place(const g::StepGraph& graph, const g::Platform& platform, g::Algorithm algorithm) {
  g::PlaceOptions o;
  o.algorithm = algorithm;
  o.fallback = g::SerialFallback::kOff;
  return g::place(graph, platform, o);
}

rt::NodeEmitter mix_emitter() {
  return [](const rt::NodeLaunch& nl) {
    std::vector<const rt::ResolvedAccess*> writes, reads;
    for (const auto& a : nl.accesses) {
      STEPGRAPH_CHECK(a.offset % 8 == 0 && a.bytes % 8 == 0, InvalidArgument,
                      "mix emitter: node '{}' has an access not in whole uint64 words", nl.ir->name);
      if (a.bytes == 0) continue;
      (a.mode == g::AccessMode::kRead ? reads : writes).push_back(&a);
    }
    for (std::size_t j = 0; j < writes.size(); ++j) {
      const auto& w = *writes[j];
      const std::size_t n = w.bytes / 8;
      const auto dims = rt::LaunchDims::linear(n);
      const std::uint64_t seed = mix64((static_cast<std::uint64_t>(nl.node) << 8) | j);
      const std::string base = nl.ir->name + "/w" + std::to_string(j);
      if (w.mode == g::AccessMode::kReadWrite)
        rt::launch(nl.stream, mix_keep(), {.name = base + "/keep", .dims = dims, .accesses = {w.declare()}},
                   w.data<std::uint64_t>(), n, seed);
      else
        rt::launch(nl.stream, mix_seed(), {.name = base + "/seed", .dims = dims, .accesses = {w.declare()}},
                   w.data<std::uint64_t>(), n, seed);
      for (std::size_t k = 0; k < reads.size(); ++k) {
        const auto& r = *reads[k];
        if (r.buffer == w.buffer && r.offset < w.offset + w.bytes && w.offset < r.offset + r.bytes) continue;
        rt::launch(nl.stream, mix_in(),
                   {.name = base + "/in" + std::to_string(k),
                    .dims = dims,
                    .accesses = {rt::read_write(*w.instance, w.offset, w.bytes), r.declare()}},
                   w.data<std::uint64_t>(), n, static_cast<const std::uint64_t*>(r.data<std::uint64_t>()), r.bytes / 8,
                   seed + k + 1);
      }
    }
  };
}

std::vector<std::byte> initial_contents(const g::StepGraph& graph, g::BufferId b) {
  std::vector<std::byte> v(graph.buffers()[b].bytes);
  for (std::size_t i = 0; i + 8 <= v.size(); i += 8) {
    const std::uint64_t w = mix64((static_cast<std::uint64_t>(b) << 32) ^ i ^ 0x5a5a5a5aull);
    std::memcpy(v.data() + i, &w, 8);
  }
  return v;
}

std::vector<std::vector<std::byte>> run_and_read(rt::LoweredGraph& lowered, const g::StepGraph& graph, int runs) {
  for (g::BufferId b = 0; b < graph.buffers().size(); ++b) lowered.upload(b, initial_contents(graph, b));
  for (int r = 0; r < runs; ++r) lowered.launch();
  lowered.synchronize();
  std::vector<std::vector<std::byte>> out;
  for (g::BufferId b = 0; b < graph.buffers().size(); ++b) out.push_back(lowered.read(b));
  return out;
}

std::vector<std::vector<std::byte>> reference(const g::StepGraph& graph, int runs, const rt::LoweringOptions& options) {
  rt::BackendOptions bo;
  bo.host_devices = 1;
  auto be = rt::Backend::create(rt::BackendKind::kHost, bo);
  auto lowered = rt::lower_single_device(graph, be, 0, mix_emitter(), options);
  return run_and_read(lowered, graph, runs);
}

int devices_used(const g::StepGraph& graph, const g::Placement& placement) {
  std::set<int> used;
  for (g::NodeId n = 0; n < graph.node_count(); ++n)
    if (placement.nodes[n].device >= 0) used.insert(placement.nodes[n].device);
  return static_cast<int>(used.size());
}

}  // namespace sgtest::lowering
