#include <stepgraph/graphs/io.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <stepgraph/core/error.h>
#include <nlohmann/json.hpp>

namespace stepgraph::graphs {

using nlohmann::json;

namespace {

const json& field(const json& obj, const char* key, const std::string& path) {
  STEPGRAPH_CHECK(obj.is_object(), InvalidArgument, "{}: expected a JSON object", path);
  auto it = obj.find(key);
  STEPGRAPH_CHECK(it != obj.end(), InvalidArgument, "{}.{}: required field is missing", path, key);
  return *it;
}

std::string get_string(const json& obj, const char* key, const std::string& path) {
  const json& v = field(obj, key, path);
  STEPGRAPH_CHECK(v.is_string(), InvalidArgument, "{}.{}: expected a string, got {}", path, key, v.dump());
  return v.get<std::string>();
}

std::uint64_t get_uint(const json& obj, const char* key, const std::string& path) {
  const json& v = field(obj, key, path);
  STEPGRAPH_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<std::int64_t>() >= 0), InvalidArgument,
                  "{}.{}: expected a non-negative integer, got {}", path, key, v.dump());
  return v.get<std::uint64_t>();
}

double get_cost(const json& v, const std::string& path) {
  STEPGRAPH_CHECK(v.is_number(), InvalidArgument, "{}: expected a number of microseconds, got {}", path, v.dump());
  const double d = v.get<double>();
  STEPGRAPH_CHECK(std::isfinite(d) && d >= 0, InvalidArgument, "{}: cost {} must be finite and >= 0", path, d);
  return d;
}

}  // namespace

std::string to_json(const StepGraph& g) {
  json doc;
  doc["schema"] = "stepgraph.graph";
  doc["version"] = kGraphSchemaVersion;
  doc["origin"] = std::string(to_string(g.origin()));
  json buffers = json::array();
  for (const auto& b : g.buffers()) buffers.push_back({{"name", b.name}, {"bytes", b.bytes}});
  doc["buffers"] = std::move(buffers);
  json nodes = json::array();
  for (const auto& n : g.nodes()) {
    json j{{"name", n.name}, {"kind", std::string(to_string(n.kind))}};
    json cost = json::object();
    for (auto k : {DeviceKind::kGpu, DeviceKind::kCpu})
      if (auto c = n.cost.get(k)) cost[std::string(to_string(k))] = *c;
    j["cost_us"] = std::move(cost);
    if (!n.accesses.empty()) {
      json acc = json::array();
      for (const auto& a : n.accesses)
        acc.push_back(
            {{"buffer", a.buffer}, {"offset", a.offset}, {"bytes", a.bytes}, {"mode", std::string(to_string(a.mode))}});
      j["accesses"] = std::move(acc);
    }
    if (n.pinned_device) j["pinned_device"] = *n.pinned_device;
    if (n.collective)
      j["collective"] = {{"op", std::string(to_string(n.collective->op))}, {"bytes", n.collective->bytes}};
    nodes.push_back(std::move(j));
  }
  doc["nodes"] = std::move(nodes);
  json edges = json::array();
  for (const auto& e : g.edges()) edges.push_back({{"src", e.src}, {"dst", e.dst}, {"bytes", e.bytes}});
  doc["edges"] = std::move(edges);
  return doc.dump(1);
}

StepGraph from_json(std::string_view text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number beyond a double
    throw InvalidArgument(fmt::format("graph JSON does not parse: {}", e.what()));
  }
  const std::string root = "$";
  const auto schema = get_string(doc, "schema", root);
  STEPGRAPH_CHECK(schema == "stepgraph.graph", InvalidArgument,
                  "$.schema is '{}'; expected 'stepgraph.graph' (is this a graph written by `stepgraph graph`?)",
                  schema);
  const json& ver = field(doc, "version", root);
  STEPGRAPH_CHECK(ver.is_number_integer() && ver.get<int>() == kGraphSchemaVersion, InvalidArgument,
                  "$.version is {}; this build reads schema version {} only; re-export the graph with this "
                  "version of stepgraph",
                  ver.dump(), kGraphSchemaVersion);
  GraphOrigin origin = GraphOrigin::kBuilder;
  if (doc.contains("origin")) origin = parse_graph_origin(get_string(doc, "origin", root), "$.origin");
  StepGraph g(origin);
  if (doc.contains("buffers")) {
    const json& bs = doc["buffers"];
    STEPGRAPH_CHECK(bs.is_array(), InvalidArgument, "$.buffers: expected an array");
    for (std::size_t i = 0; i < bs.size(); ++i) {
      const std::string path = fmt::format("$.buffers[{}]", i);
      g.add_buffer(get_string(bs[i], "name", path), get_uint(bs[i], "bytes", path));
    }
  }
  const json& ns = field(doc, "nodes", root);
  STEPGRAPH_CHECK(ns.is_array(), InvalidArgument, "$.nodes: expected an array");
  for (std::size_t i = 0; i < ns.size(); ++i) {
    const std::string path = fmt::format("$.nodes[{}]", i);
    const json& j = ns[i];
    NodeSpec s;
    s.name = get_string(j, "name", path);
    s.kind = parse_node_kind(get_string(j, "kind", path), path + ".kind");
    if (j.contains("cost_us")) {
      const json& c = j["cost_us"];
      STEPGRAPH_CHECK(c.is_object(), InvalidArgument, "{}.cost_us: expected an object {{\"gpu\": us, \"cpu\": us}}",
                      path);
      for (auto it = c.begin(); it != c.end(); ++it) {
        const auto kind = parse_device_kind(it.key(), path + ".cost_us");
        s.cost.set(kind, get_cost(it.value(), path + ".cost_us." + it.key()));
      }
    }
    if (j.contains("accesses")) {
      const json& acc = j["accesses"];
      STEPGRAPH_CHECK(acc.is_array(), InvalidArgument, "{}.accesses: expected an array", path);
      for (std::size_t k = 0; k < acc.size(); ++k) {
        const std::string ap = fmt::format("{}.accesses[{}]", path, k);
        BufferAccess a;
        a.buffer = static_cast<BufferId>(get_uint(acc[k], "buffer", ap));
        a.offset = get_uint(acc[k], "offset", ap);
        a.bytes = get_uint(acc[k], "bytes", ap);
        a.mode = parse_access_mode(get_string(acc[k], "mode", ap), ap + ".mode");
        s.accesses.push_back(a);
      }
    }
    if (j.contains("pinned_device") && !j["pinned_device"].is_null()) {
      const json& pd = j["pinned_device"];
      STEPGRAPH_CHECK(pd.is_number_integer() && pd.get<std::int64_t>() >= 0, InvalidArgument,
                      "{}.pinned_device: expected a device index >= 0, got {}", path, pd.dump());
      s.pinned_device = pd.get<int>();
    }
    if (j.contains("collective")) {
      const json& c = j["collective"];
      s.collective =
          CollectiveSpec{parse_collective_op(get_string(c, "op", path + ".collective"), path + ".collective.op"),
                         get_uint(c, "bytes", path + ".collective")};
    }
    try {
      g.add_node(std::move(s));
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(fmt::format("{}: {}", path, e.what()));
    }
  }
  const json& es = field(doc, "edges", root);
  STEPGRAPH_CHECK(es.is_array(), InvalidArgument, "$.edges: expected an array");
  for (std::size_t i = 0; i < es.size(); ++i) {
    const std::string path = fmt::format("$.edges[{}]", i);
    Edge e;
    e.src = static_cast<NodeId>(get_uint(es[i], "src", path));
    e.dst = static_cast<NodeId>(get_uint(es[i], "dst", path));
    e.bytes = es[i].contains("bytes") ? get_uint(es[i], "bytes", path) : 0;
    g.add_edge_unchecked(e);
  }
  return g;
}

void save_json(const StepGraph& g, const std::filesystem::path& file) {
  std::ofstream out(file);
  STEPGRAPH_CHECK(out.good(), InvalidArgument, "cannot open '{}' for writing", file.string());
  out << to_json(g) << '\n';
  STEPGRAPH_CHECK(out.good(), InvalidState, "writing '{}' failed (disk full?)", file.string());
}

StepGraph load_json(const std::filesystem::path& file) {
  std::ifstream in(file);
  STEPGRAPH_CHECK(in.good(), InvalidArgument, "cannot open graph file '{}'; check the path", file.string());
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return from_json(ss.str());
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("{}: {}", file.string(), e.what()));
  }
}

namespace {
std::string dot_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}
}  // namespace

std::string to_dot(const StepGraph& g, const DotOptions& options) {
  std::string out = "digraph stepgraph {\n  rankdir=TB;\n  node [shape=box, fontsize=10];\n";
  auto node_line = [&](const Node& n, const char* indent) {
    std::string label = fmt::format("{}\\n{}", dot_escape(n.name), to_string(n.kind));
    if (options.placement) label += fmt::format("\\n@{:.1f}us", options.placement->nodes.at(n.id).start_us);
    const char* shape = n.kind == NodeKind::kCollective ? ", shape=hexagon" : "";
    out += fmt::format("{}n{} [label=\"{}\"{}];\n", indent, n.id, label, shape);
  };
  if (options.placement) {
    const auto& pl = *options.placement;
    for (std::size_t d = 0; d < pl.device_order.size(); ++d) {
      out += fmt::format("  subgraph cluster_dev{} {{\n    label=\"device {}\";\n", d, d);
      for (NodeId u : pl.device_order[d])
        if (pl.nodes[u].device == static_cast<int>(d)) node_line(g.nodes()[u], "    ");
      out += "  }\n";
    }
    for (const auto& n : g.nodes())
      if (pl.nodes.at(n.id).device == kAllDevices) node_line(n, "  ");
  } else {
    for (const auto& n : g.nodes()) node_line(n, "  ");
  }
  for (const auto& e : g.edges()) {
    if (e.bytes)
      out += fmt::format("  n{} -> n{} [label=\"{}B\"];\n", e.src, e.dst, e.bytes);
    else
      out += fmt::format("  n{} -> n{};\n", e.src, e.dst);
  }
  out += "}\n";
  return out;
}

std::string placement_to_json(const StepGraph& g, const Placement& pl) {
  json doc;
  doc["algorithm"] = std::string(to_string(pl.algorithm));
  doc["estimated_makespan_us"] = pl.estimated_makespan_us;
  doc["serial_fallback"] = pl.serial_fallback;
  doc["searched_moves"] = pl.searched_moves;
  doc["searched_evaluations"] = pl.searched_evaluations;
  json nodes = json::array();
  for (NodeId u = 0; u < pl.nodes.size(); ++u)
    nodes.push_back({{"name", g.node(u).name},
                     {"device", pl.nodes[u].device},
                     {"start_us", pl.nodes[u].start_us},
                     {"finish_us", pl.nodes[u].finish_us}});
  doc["nodes"] = std::move(nodes);
  doc["device_order"] = pl.device_order;
  return doc.dump(1);
}

}  // namespace stepgraph::graphs
