// stepgraph.Graph, stepgraph.Platform, stepgraph.Placement and
// stepgraph.place(): the graphs module (graphs/include/stepgraph/graphs/)
// for Python. Graph is mutable through its builder methods and not
// thread-safe; Platform and Placement are immutable values. place() releases
// the GIL while it schedules (it may take a second on large graphs): do not
// mutate the graph from another thread meanwhile.
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/graph.h>
#include <stepgraph/graphs/io.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/platform.h>
#include <stepgraph/topology/cost_matrix.h>

#include "module.h"

namespace stepgraph::python {

namespace {

namespace g = stepgraph::graphs;
namespace topo = stepgraph::topology;
using namespace py::literals;

g::EndpointSelection parse_selection(const std::string& s) {
  if (s == "gpus") return g::EndpointSelection::kGpus;
  if (s == "gpus+numa") return g::EndpointSelection::kGpusAndNuma;
  if (s == "numa") return g::EndpointSelection::kNuma;
  throw InvalidArgument("devices: unknown selection '" + s + "'; use 'gpus', 'gpus+numa' or 'numa'");
}

g::DeviceCosts costs(std::optional<double> gpu_us, std::optional<double> cpu_us) {
  g::DeviceCosts c;
  if (gpu_us) c.set(g::DeviceKind::kGpu, *gpu_us);
  if (cpu_us) c.set(g::DeviceKind::kCpu, *cpu_us);
  return c;
}

using AccessTuple = std::tuple<g::BufferId, std::uint64_t, std::uint64_t, std::string>;

std::vector<g::BufferAccess> accesses(const std::vector<AccessTuple>& in) {
  std::vector<g::BufferAccess> out;
  for (const auto& [buffer, offset, bytes, mode] : in)
    out.push_back({buffer, offset, bytes, g::parse_access_mode(mode, "accesses[i][3]")});
  return out;
}

/// A placement with the graph it was made for (its JSON names the nodes).
struct PyPlacement {
  g::Placement placement;
  std::shared_ptr<const g::StepGraph> graph;
  std::vector<std::string> device_names;
};

}  // namespace

void bind_graphs(py::module_& m) {
  py::class_<g::StepGraph, std::shared_ptr<g::StepGraph>>(m, "Graph", R"doc(
A StepGraph: buffers, nodes with per-device-kind costs and buffer accesses,
and edges. Build it here (add_buffer, add_kernel, connect) or read the JSON
that `stepgraph graph` writes (Graph.load_json). Not thread-safe.)doc")
      .def(py::init<>())
      .def_static(
          "load_json", [](const std::filesystem::path& p) { return std::make_shared<g::StepGraph>(g::load_json(p)); },
          "path"_a)
      .def_static(
          "from_json", [](const std::string& text) { return std::make_shared<g::StepGraph>(g::from_json(text)); },
          "text"_a)
      .def("to_json", [](const g::StepGraph& graph) { return g::to_json(graph); })
      .def("save_json", [](const g::StepGraph& graph, const std::filesystem::path& p) { g::save_json(graph, p); })
      .def("add_buffer", &g::StepGraph::add_buffer, "name"_a, "bytes"_a, "Returns the buffer's id.")
      .def(
          "add_kernel",
          [](g::StepGraph& graph, std::string name, std::optional<double> gpu_us, std::optional<double> cpu_us,
             const std::vector<AccessTuple>& acc) {
            return graph.add_kernel(std::move(name), costs(gpu_us, cpu_us), accesses(acc));
          },
          "name"_a, "gpu_us"_a = py::none(), "cpu_us"_a = py::none(), "accesses"_a = std::vector<AccessTuple>{},
          "A kernel node; a device kind without a cost cannot run it. accesses: (buffer id, offset, bytes, "
          "'read' | 'write' | 'read_write'). Returns the node's id.")
      .def(
          "connect",
          [](g::StepGraph& graph, g::NodeId src, g::NodeId dst, std::optional<std::uint64_t> bytes) {
            if (bytes)
              graph.connect(src, dst, *bytes);
            else
              graph.connect(src, dst);
          },
          "src"_a, "dst"_a, "bytes"_a = py::none(),
          "An edge; without bytes, the overlap of what src writes with what dst reads.")
      .def("validate", [](const g::StepGraph& graph) { g::validate(graph); })
      .def_property_readonly("node_count", &g::StepGraph::node_count)
      .def_property_readonly("edge_count", &g::StepGraph::edge_count)
      .def_property_readonly("node_names",
                             [](const g::StepGraph& graph) {
                               std::vector<std::string> out;
                               for (const g::Node& n : graph.nodes()) out.push_back(n.name);
                               return out;
                             })
      .def_property_readonly("edges", [](const g::StepGraph& graph) {
        std::vector<std::tuple<g::NodeId, g::NodeId, std::uint64_t>> out;
        for (const g::Edge& e : graph.edges()) out.emplace_back(e.src, e.dst, e.bytes);
        return out;
      });

  py::class_<g::Platform, std::shared_ptr<g::Platform>>(m, "Platform", R"doc(
The devices a graph is placed on, with a link for every pair. Immutable.)doc")
      .def_static(
          "from_topology",
          [](const topo::Topology& t, const std::string& devices) {
            return std::make_shared<g::Platform>(
                g::Platform::from_cost_matrix(topo::CostMatrix::build(t), parse_selection(devices)));
          },
          "topology"_a, "devices"_a = "gpus", "devices: 'gpus', 'gpus+numa' or 'numa'.")
      .def_static(
          "uniform",
          [](std::size_t n, const std::string& kind, double bandwidth_gbps, double latency_us) {
            STEPGRAPH_CHECK(n >= 1, InvalidArgument, "Platform.uniform: n is 0; give at least one device");
            return std::make_shared<g::Platform>(
                g::Platform::uniform(n, g::parse_device_kind(kind, "kind"), g::Link{bandwidth_gbps, latency_us}));
          },
          "n"_a, "kind"_a = "gpu", "bandwidth_gbps"_a = 25.0, "latency_us"_a = 2.0)
      .def_property_readonly("size", &g::Platform::size)
      .def_property_readonly("device_names", [](const g::Platform& p) {
        std::vector<std::string> out;
        for (const g::Device& d : p.devices()) out.push_back(d.name);
        return out;
      });

  py::class_<PyPlacement>(m, "Placement", R"doc(
The result of place(): per node a device (an index into the platform; -1 for
a collective, which runs on every device) and simulated start and finish
times (us), per device the nodes in execution order. Immutable.)doc")
      .def_property_readonly("algorithm",
                             [](const PyPlacement& p) { return std::string(g::to_string(p.placement.algorithm)); })
      .def_property_readonly("devices",
                             [](const PyPlacement& p) {
                               std::vector<int> out;
                               for (const g::ScheduledNode& n : p.placement.nodes) out.push_back(n.device);
                               return out;
                             })
      .def_property_readonly("start_us",
                             [](const PyPlacement& p) {
                               std::vector<double> out;
                               for (const g::ScheduledNode& n : p.placement.nodes) out.push_back(n.start_us);
                               return out;
                             })
      .def_property_readonly("finish_us",
                             [](const PyPlacement& p) {
                               std::vector<double> out;
                               for (const g::ScheduledNode& n : p.placement.nodes) out.push_back(n.finish_us);
                               return out;
                             })
      .def_property_readonly("device_order", [](const PyPlacement& p) { return p.placement.device_order; })
      .def_property_readonly("device_names", [](const PyPlacement& p) { return p.device_names; })
      .def_property_readonly("estimated_makespan_us",
                             [](const PyPlacement& p) { return p.placement.estimated_makespan_us; })
      .def_property_readonly("serial_fallback", [](const PyPlacement& p) { return p.placement.serial_fallback; })
      .def_property_readonly("searched_evaluations",
                             [](const PyPlacement& p) { return p.placement.searched_evaluations; })
      .def("to_json", [](const PyPlacement& p) { return g::placement_to_json(*p.graph, p.placement); });

  m.def(
      "place",
      [](std::shared_ptr<g::StepGraph> graph,
         const std::variant<std::shared_ptr<topo::Topology>, std::shared_ptr<g::Platform>>& where,
         const std::string& algo, const std::string& devices, std::optional<int> search, std::uint64_t search_seed) {
        STEPGRAPH_CHECK(graph != nullptr, InvalidArgument, "place: graph is None");
        std::shared_ptr<g::Platform> platform;
        if (const auto* t = std::get_if<std::shared_ptr<topo::Topology>>(&where)) {
          STEPGRAPH_CHECK(*t != nullptr, InvalidArgument, "place: topology is None");
          platform = std::make_shared<g::Platform>(
              g::Platform::from_cost_matrix(topo::CostMatrix::build(**t), parse_selection(devices)));
        } else {
          platform = std::get<std::shared_ptr<g::Platform>>(where);
          STEPGRAPH_CHECK(platform != nullptr, InvalidArgument, "place: platform is None");
        }
        g::PlaceOptions po;
        po.algorithm = g::parse_algorithm(algo);
        if (search) {
          STEPGRAPH_CHECK(*search >= 0, InvalidArgument, "place: search is {}; give None (auto) or >= 0", *search);
          po.search_evaluations = *search;
        }
        po.search_seed = search_seed;
        PyPlacement out;
        {
          py::gil_scoped_release unlocked;
          g::validate(*graph);
          out.placement = g::place(*graph, *platform, po);
        }
        out.graph = graph;
        for (const g::Device& d : platform->devices()) out.device_names.push_back(d.name);
        return out;
      },
      "graph"_a, "topology"_a, "algo"_a = "heft", "devices"_a = "gpus", "search"_a = py::none(), "search_seed"_a = 1,
      R"doc(Places `graph` on the devices of `topology` (a Topology: its cost matrix's
`devices` selection, 'gpus' | 'gpus+numa' | 'numa'; or a Platform) with
`algo` ('heft' | 'heft-blind' | 'rr' | 'greedy'), as `stepgraph place` does.
search: simulator evaluations after the algorithm (None: automatic).)doc");
}

}  // namespace stepgraph::python
