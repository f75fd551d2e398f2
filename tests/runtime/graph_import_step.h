// tests/runtime/graph_import_step.h — the small multi-stream step the graph
// import tests capture with the annotated launch API (typed suite in
// graph_import_test.cpp, lowering of the import in
// host_graph_import_test.cpp), and the same step written by hand with the
// StepGraph builder: the independent reference.
//
//   s0: memset "zero y"        y = 0                         (write y)
//   s0: copy   "upload x"      x <- h_in                     (read h_in, write x)
//   s0: record fork; s1: wait fork
//   s0: kernel "axpy lo"       y[lo] += 2 x[lo]              (read x[lo], read-write y[lo])
//   s1: kernel "axpy hi"       y[hi] += 3 x[hi]              (read x[hi], read-write y[hi])
//   s1: kernel "fill z"        z = 1.5                       (write z)
//   s1: record join; s0: wait join
//   s0: kernel "sum"           y += z                        (read z, read-write y)
//   s0: copy   "download y"    h_out <- y                    (read y, write h_out)
//
// So y[i] = 2 x[i] + 1.5 for i < kHalf and 3 x[i] + 1.5 above, and h_out = y.
#pragma once

#include <cstddef>
#include <cstring>
#include <vector>

#include <stepgraph/graphs/graph.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/graph_import.h>

#include "test_kernels.h"

namespace sgtest::import {

namespace g = stepgraph::graphs;
namespace rt = stepgraph::runtime;

inline constexpr std::size_t kN = 256;  // floats per buffer
inline constexpr std::size_t kHalf = kN / 2;
inline constexpr std::size_t kBytes = kN * sizeof(float);
inline constexpr std::size_t kHalfBytes = kHalf * sizeof(float);

inline float x_value(std::size_t i) {
  return static_cast<float>(i % 17) - 4.0F;
}
inline float expected_y(std::size_t i) {
  return (i < kHalf ? 2.0F : 3.0F) * x_value(i) + 1.5F;
}

/// The step's memory, and its capture.
struct Step {
  std::shared_ptr<rt::Backend> backend;
  rt::Buffer x, y, z, h_in, h_out;
  rt::Stream s0, s1;
  rt::Event fork, join;
  rt::Graph graph;

  explicit Step(std::shared_ptr<rt::Backend> be) : backend(std::move(be)) {
    x = backend->allocate(0, kBytes);
    y = backend->allocate(0, kBytes);
    z = backend->allocate(0, kBytes);
    h_in = backend->allocate_pinned(kBytes);
    h_out = backend->allocate_pinned(kBytes);
    auto in = h_in.host_span<float>();
    for (std::size_t i = 0; i < kN; ++i) in[i] = x_value(i);
    std::memset(h_out.host_data(), 0, kBytes);
    s0 = backend->create_stream(0);
    s1 = backend->create_stream(0);
    fork = backend->create_event(0);
    join = backend->create_event(0);
    graph = capture();
  }

  rt::Graph capture() {
    rt::CaptureSession session(s0);
    s0.memset(y.slice(), 0, "zero y");
    s0.copy(x.slice(), h_in.slice(), "upload x");
    s0.record(fork);
    s1.wait(fork);
    rt::launch(s0, axpy_f32(),
               {.name = "axpy lo", .accesses = {rt::read(x, 0, kHalfBytes), rt::read_write(y, 0, kHalfBytes)}},
               y.data<float>(), static_cast<const float*>(x.data<float>()), kHalf, 2.0F);
    rt::launch(s1, axpy_f32(),
               {.name = "axpy hi",
                .accesses = {rt::read(x, kHalfBytes, kHalfBytes), rt::read_write(y, kHalfBytes, kHalfBytes)}},
               y.data<float>() + kHalf, static_cast<const float*>(x.data<float>() + kHalf), kHalf, 3.0F);
    rt::launch(s1, fill_f32(), {.name = "fill z", .accesses = {rt::write(z)}}, z.data<float>(), kN, 1.5F);
    s1.record(join);
    s0.wait(join);
    rt::launch(s0, axpy_f32(), {.name = "sum", .accesses = {rt::read(z), rt::read_write(y)}}, y.data<float>(),
               static_cast<const float*>(z.data<float>()), kN, 1.0F);
    s0.copy(h_out.slice(), y.slice(), "download y");
    return session.end();
  }

  /// Names and sizes of every buffer, for ImportOptions::buffers.
  [[nodiscard]] std::vector<rt::KnownBuffer> known() const {
    return {rt::known_buffer(x, "x"), rt::known_buffer(y, "y"), rt::known_buffer(z, "z"),
            rt::known_buffer(h_in, "h_in"), rt::known_buffer(h_out, "h_out")};
  }
};

/// The same step written by hand with the builder (costs: 1 µs everywhere).
inline g::StepGraph reference_graph() {
  g::StepGraph r(g::GraphOrigin::kAnnotatedCapture);
  const auto x = r.add_buffer("x", kBytes);
  const auto y = r.add_buffer("y", kBytes);
  const auto z = r.add_buffer("z", kBytes);
  const auto h_in = r.add_buffer("h_in", kBytes);
  const auto h_out = r.add_buffer("h_out", kBytes);
  using M = g::AccessMode;
  auto node = [&](const char* name, g::NodeKind kind, std::vector<g::BufferAccess> accesses) {
    g::NodeSpec s;
    s.name = name;
    s.kind = kind;
    s.cost = g::DeviceCosts::uniform(1.0);
    s.accesses = std::move(accesses);
    return r.add_node(std::move(s));
  };
  const auto zero = node("zero y", g::NodeKind::kMemset, {{y, 0, kBytes, M::kWrite}});
  const auto up = node("upload x", g::NodeKind::kMemcpy, {{h_in, 0, kBytes, M::kRead}, {x, 0, kBytes, M::kWrite}});
  const auto lo =
      node("axpy lo", g::NodeKind::kKernel, {{x, 0, kHalfBytes, M::kRead}, {y, 0, kHalfBytes, M::kReadWrite}});
  const auto hi = node("axpy hi", g::NodeKind::kKernel,
                       {{x, kHalfBytes, kHalfBytes, M::kRead}, {y, kHalfBytes, kHalfBytes, M::kReadWrite}});
  const auto fz = node("fill z", g::NodeKind::kKernel, {{z, 0, kBytes, M::kWrite}});
  const auto sum = node("sum", g::NodeKind::kKernel, {{z, 0, kBytes, M::kRead}, {y, 0, kBytes, M::kReadWrite}});
  const auto down = node("download y", g::NodeKind::kMemcpy, {{y, 0, kBytes, M::kRead}, {h_out, 0, kBytes, M::kWrite}});
  // Stream order, the fork after "upload x", the join before "sum"; bytes
  // written here by hand from the accesses above.
  r.connect(zero, up, 0);
  r.connect(up, lo, kHalfBytes);
  r.connect(up, hi, kHalfBytes);
  r.connect(hi, fz, 0);
  r.connect(lo, sum, kHalfBytes);
  r.connect(fz, sum, kBytes);
  r.connect(sum, down, kBytes);
  return r;
}

}  // namespace sgtest::import
