// stepgraph.Topology and stepgraph.CostMatrix: the topology module
// (topology/include/stepgraph/topology/) for Python. Both are immutable
// values once built; every method may be called from any thread.
#include <memory>
#include <string>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

#include "module.h"

namespace stepgraph::python {

namespace {

namespace topo = stepgraph::topology;
using namespace py::literals;

std::string format_name(topo::SourceFormat f) {
  switch (f) {
    case topo::SourceFormat::kLive:
      return "live";
    case topo::SourceFormat::kHwlocXml:
      return "hwloc-xml";
    case topo::SourceFormat::kNcclXml:
      return "nccl-xml";
  }
  return "?";
}

py::list gpus(const topo::Topology& t) {
  py::list out;
  for (const topo::Gpu& g : t.gpus())
    out.append(py::dict("index"_a = g.index, "name"_a = g.name, "model"_a = g.model, "bus_id"_a = g.bus_id,
                        "sm"_a = g.sm, "cuda_device"_a = g.cuda_device, "numa_node"_a = g.numa_node,
                        "cpus"_a = g.cpus.to_string()));
  return out;
}

py::list nics(const topo::Topology& t) {
  py::list out;
  for (const topo::Nic& n : t.nics())
    out.append(py::dict("index"_a = n.index, "name"_a = n.name, "bus_id"_a = n.bus_id, "speed_gbps"_a = n.speed_gbps,
                        "numa_node"_a = n.numa_node, "cpus"_a = n.cpus.to_string()));
  return out;
}

py::list numa_nodes(const topo::Topology& t) {
  py::list out;
  for (const topo::NumaNode& n : t.numa_nodes())
    out.append(py::dict("index"_a = n.index, "os_index"_a = n.os_index,
                        "kind"_a = n.kind == topo::NumaKind::kCpu ? "cpu" : "gpu-memory",
                        "memory_bytes"_a = n.memory_bytes, "cpus"_a = n.cpus.to_string(), "package"_a = n.package));
  return out;
}

/// An n x n float64 array of f(path(a, b)): a copy (the matrix is small).
template <class F>
py::array_t<double> per_pair(const topo::CostMatrix& m, F f) {
  const auto n = static_cast<py::ssize_t>(m.size());
  py::array_t<double> out({n, n});
  auto v = out.mutable_unchecked<2>();
  for (py::ssize_t a = 0; a < n; ++a)
    for (py::ssize_t b = 0; b < n; ++b) v(a, b) = f(m.path(static_cast<std::size_t>(a), static_cast<std::size_t>(b)));
  return out;
}

}  // namespace

void bind_topology(py::module_& m) {
  py::class_<topo::Topology, std::shared_ptr<topo::Topology>>(m, "Topology", R"doc(
A machine's topology: packages, NUMA nodes, PCI tree, GPUs, NICs, NVLinks.
Loaded from an hwloc XML or NCCL topology XML file (Topology.load), or
discovered on this machine with hwloc (Topology.discover). Immutable.)doc")
      .def_static(
          "load",
          [](const std::filesystem::path& path) {
            return std::make_shared<topo::Topology>(topo::Topology::load(path));
          },
          "path"_a, "An hwloc XML or NCCL topology XML file (the format is detected).")
      .def_static(
          "parse",
          [](const std::string& text, const std::string& origin) {
            return std::make_shared<topo::Topology>(topo::Topology::parse(text, origin));
          },
          "text"_a, "origin"_a = "<string>")
      .def_static(
          "discover",
          [] {
            py::gil_scoped_release unlocked;  // hwloc discovery takes a while
            return std::make_shared<topo::Topology>(topo::Topology::discover());
          },
          "This machine, as hwloc (and CUDA, where a device is present) sees it.")
      .def_property_readonly("source", &topo::Topology::source)
      .def_property_readonly("format", [](const topo::Topology& t) { return format_name(t.format()); })
      .def_property_readonly("gpu_count", &topo::Topology::gpu_count)
      .def_property_readonly("nic_count", &topo::Topology::nic_count)
      .def_property_readonly("numa_count", &topo::Topology::numa_count)
      .def_property_readonly("package_count", &topo::Topology::package_count)
      .def_property_readonly("nvswitch_count", &topo::Topology::nvswitch_count)
      .def_property_readonly("pu_count", &topo::Topology::pu_count)
      .def_property_readonly("core_count", &topo::Topology::core_count)
      .def_property_readonly("gpus", &gpus)
      .def_property_readonly("nics", &nics)
      .def_property_readonly("numa_nodes", &numa_nodes)
      .def_property_readonly("notes", &topo::Topology::notes)
      .def("numa_distance", &topo::Topology::numa_distance, "a"_a, "b"_a)
      .def("to_json", &topo::Topology::to_json)
      .def("to_nccl_xml", &topo::Topology::to_nccl_xml)
      .def("cost_matrix", [](const topo::Topology& t) { return topo::CostMatrix::build(t); })
      .def("__repr__", [](const topo::Topology& t) {
        return "<stepgraph.Topology " + t.source() + ": " + std::to_string(t.gpu_count()) + " GPUs, " +
               std::to_string(t.nic_count()) + " NICs, " + std::to_string(t.numa_count()) + " NUMA nodes>";
      });

  py::class_<topo::CostMatrix>(m, "CostMatrix", R"doc(
For every pair of endpoints (GPUs, then NICs, then NUMA nodes): the path
kind as `nvidia-smi topo -m` prints it, a bandwidth (GB/s, one direction)
and a latency (us). The arrays are copies (numpy, n x n).)doc")
      .def_static("build", &topo::CostMatrix::build, "topology"_a)
      .def_property_readonly("size", &topo::CostMatrix::size)
      .def_property_readonly(
          "endpoints",
          [](const topo::CostMatrix& c) {
            py::list out;
            for (const topo::Endpoint& e : c.endpoints())
              out.append(py::dict("kind"_a = std::string(topo::to_string(e.kind)), "index"_a = e.index,
                                  "name"_a = e.name, "numa_node"_a = e.numa_node));
            return out;
          })
      .def_property_readonly("names",
                             [](const topo::CostMatrix& c) {
                               std::vector<std::string> out;
                               for (const topo::Endpoint& e : c.endpoints()) out.push_back(e.name);
                               return out;
                             })
      .def_property_readonly("labels",
                             [](const topo::CostMatrix& c) {
                               std::vector<std::vector<std::string>> out(c.size());
                               for (std::size_t a = 0; a < c.size(); ++a)
                                 for (std::size_t b = 0; b < c.size(); ++b) out[a].push_back(c.path(a, b).label());
                               return out;
                             })
      .def_property_readonly(
          "bandwidth_gbps",
          [](const topo::CostMatrix& c) { return per_pair(c, [](const topo::Path& p) { return p.bandwidth_gbps; }); })
      .def_property_readonly(
          "latency_us",
          [](const topo::CostMatrix& c) { return per_pair(c, [](const topo::Path& p) { return p.latency_us; }); })
      .def_property_readonly("numa_distance",
                             [](const topo::CostMatrix& c) {
                               const auto n = static_cast<py::ssize_t>(c.numa_count());
                               py::array_t<double> out({n, n});
                               auto v = out.mutable_unchecked<2>();
                               for (py::ssize_t a = 0; a < n; ++a)
                                 for (py::ssize_t b = 0; b < n; ++b)
                                   v(a, b) = c.numa_distance(static_cast<std::size_t>(a), static_cast<std::size_t>(b));
                               return out;
                             })
      .def(
          "path",
          [](const topo::CostMatrix& c, std::size_t a, std::size_t b) {
            const topo::Path& p = c.path(a, b);
            std::vector<std::string> links;
            for (auto l : p.links) links.push_back(c.links().at(l).name);
            return py::dict("kind"_a = std::string(topo::to_string(p.kind)), "label"_a = p.label(),
                            "nvlinks"_a = p.nvlinks, "bandwidth_gbps"_a = p.bandwidth_gbps,
                            "latency_us"_a = p.latency_us, "links"_a = links);
          },
          "a"_a, "b"_a)
      .def("to_nvidia_smi", &topo::CostMatrix::to_nvidia_smi)
      .def("to_json", &topo::CostMatrix::to_json);
}

}  // namespace stepgraph::python
