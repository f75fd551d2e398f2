// In-process communicators on the host backend: every op x dtype x {eager,
// captured} x {2, 3, 4} ranks against a serial float64 reference, the order
// rule (mismatch, missing peer, abort), introspection, and bad input.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include <stepgraph/collectives/in_process.h>
#include <stepgraph/runtime/backend.h>

#include "elements.h"
#include "expect_throw.h"

namespace {

using namespace stepgraph;
using namespace stepgraph::runtime;
using namespace stepgraph::collectives;
using sgtest::elements::decode;
using sgtest::elements::encode;

std::shared_ptr<Backend> host_backend(int devices, std::uint64_t seed = 7) {
  BackendOptions o;
  o.host_devices = devices;
  o.workers_per_device = 2;
  o.shuffle_seed = seed;
  o.bind_workers = false;
  return Backend::create("host", o);
}

std::vector<int> iota(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i;
  return v;
}

bool is_integer(DType t) {
  return t == DType::kInt32 || t == DType::kInt64 || t == DType::kUInt8;
}

double random_value(DType t, std::mt19937_64& rng) {
  switch (t) {
    case DType::kInt32:
    case DType::kInt64:
      return static_cast<double>(std::uniform_int_distribution<int>(-1000, 1000)(rng));
    case DType::kUInt8:
      return static_cast<double>(std::uniform_int_distribution<int>(0, 60)(rng));
    case DType::kFloat16:
    case DType::kBFloat16:
      return std::uniform_int_distribution<int>(-64, 64)(rng) / 64.0;
    default:
      return std::uniform_real_distribution<double>(-1.0, 1.0)(rng);
  }
}

// The bound a float result may differ from the float64 reference by
// (stated in docs/collectives.md): the reduction accumulates in float32 (or
// float64) in rank order, n - 1 additions each with relative error u_acc, then
// one rounding to the storage type (u_store), and one division for kAverage.
double bound(DType t, int n, double sum_abs, double ref) {
  double u_acc = 0x1p-24, u_store = 0x1p-24;
  if (t == DType::kFloat64) u_acc = u_store = 0x1p-53;
  if (t == DType::kFloat16) u_store = 0x1p-11;
  if (t == DType::kBFloat16) u_store = 0x1p-8;
  return (n + 1) * u_acc * sum_abs + u_store * std::abs(ref) + 1e-300;
}

struct Case {
  CollectiveKind kind;
  ReduceOp op;
  DType dtype;
  int ranks;
  bool captured;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  std::string s = std::string(to_string(c.kind));
  if (c.kind == CollectiveKind::kAllReduce || c.kind == CollectiveKind::kReduceScatter)
    s += "_" + std::string(to_string(c.op));
  s += "_" + std::string(to_string(c.dtype)) + "_" + std::to_string(c.ranks) + "ranks_" +
       (c.captured ? "captured" : "eager");
  return s;
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  const DType types[] = {DType::kFloat32, DType::kFloat64, DType::kInt32,
                         DType::kInt64,   DType::kFloat16, DType::kBFloat16};
  const ReduceOp ops[] = {ReduceOp::kSum, ReduceOp::kAverage, ReduceOp::kMax, ReduceOp::kMin};
  for (int n : {2, 3, 4})
    for (bool cap : {false, true})
      for (DType t : types) {
        for (ReduceOp op : ops) {
          out.push_back({CollectiveKind::kAllReduce, op, t, n, cap});
          out.push_back({CollectiveKind::kReduceScatter, op, t, n, cap});
        }
        out.push_back({CollectiveKind::kBroadcast, ReduceOp::kSum, t, n, cap});
        out.push_back({CollectiveKind::kAllGather, ReduceOp::kSum, t, n, cap});
      }
  return out;
}

class EveryCollective : public ::testing::TestWithParam<Case> {};

TEST_P(EveryCollective, MatchesTheSerialReference) {
  const Case c = GetParam();
  const int n = c.ranks;
  auto backend = host_backend(n);
  auto comms = make_in_process_group(backend, iota(n));
  const std::size_t count = 1000 + 37;  // not a multiple of the rank count
  const std::size_t es = dtype_size(c.dtype);
  const int root = n - 1;
  std::size_t in_elems = count, out_elems = count;
  if (c.kind == CollectiveKind::kAllGather) out_elems = count * static_cast<std::size_t>(n);
  if (c.kind == CollectiveKind::kReduceScatter) in_elems = count * static_cast<std::size_t>(n);

  std::mt19937_64 rng(1234 + static_cast<unsigned>(n));
  std::vector<std::vector<double>> input(static_cast<std::size_t>(n), std::vector<double>(in_elems));
  std::byte cell[8];
  for (auto& v : input)
    for (auto& x : v) {
      encode(c.dtype, cell, random_value(c.dtype, rng));
      x = decode(c.dtype, cell);  // the value as stored
    }

  std::vector<Buffer> send, recv, stage;
  std::vector<Stream> streams;
  for (int r = 0; r < n; ++r) {
    streams.push_back(backend->create_stream(r));
    send.push_back(backend->allocate(r, in_elems * es));
    recv.push_back(c.kind == CollectiveKind::kAllReduce || c.kind == CollectiveKind::kBroadcast
                       ? Buffer()
                       : backend->allocate(r, out_elems * es));
    stage.push_back(backend->allocate_pinned(std::max(in_elems, out_elems) * es));
    auto* p = static_cast<std::byte*>(stage.back().host_data());
    for (std::size_t i = 0; i < in_elems; ++i) encode(c.dtype, p + i * es, input[static_cast<std::size_t>(r)][i]);
    streams.back().copy(send.back().slice(), stage.back().slice(0, in_elems * es));
    streams.back().synchronize();
  }

  auto issue = [&](int r) {
    const auto& s = streams[static_cast<std::size_t>(r)];
    auto& comm = *comms[static_cast<std::size_t>(r)];
    const auto& b = send[static_cast<std::size_t>(r)];
    switch (c.kind) {
      case CollectiveKind::kAllReduce:
        comm.all_reduce(s, b, 0, count, c.dtype, c.op);
        break;
      case CollectiveKind::kBroadcast:
        comm.broadcast(s, b, 0, count, c.dtype, root);
        break;
      case CollectiveKind::kAllGather:
        comm.all_gather(s, b, 0, recv[static_cast<std::size_t>(r)], 0, count, c.dtype);
        break;
      case CollectiveKind::kReduceScatter:
        comm.reduce_scatter(s, b, 0, recv[static_cast<std::size_t>(r)], 0, count, c.dtype, c.op);
        break;
    }
  };
  std::vector<GraphExec> execs;
  if (c.captured) {
    for (int r = 0; r < n; ++r) {
      CaptureSession session(streams[static_cast<std::size_t>(r)]);
      issue(r);
      Graph g = session.end();
      const GraphInfo info = g.info();
      ASSERT_EQ(info.count(NodeKind::kCollective), 1u);
      execs.push_back(g.instantiate());
    }
    for (int r = 0; r < n; ++r) execs[static_cast<std::size_t>(r)].launch(streams[static_cast<std::size_t>(r)]);
  } else {
    for (int r = 0; r < n; ++r) issue(r);
  }
  for (int r = 0; r < n; ++r) {
    const bool in_place = c.kind == CollectiveKind::kAllReduce || c.kind == CollectiveKind::kBroadcast;
    const auto& out = in_place ? send[static_cast<std::size_t>(r)] : recv[static_cast<std::size_t>(r)];
    streams[static_cast<std::size_t>(r)].copy(stage[static_cast<std::size_t>(r)].slice(0, out_elems * es), out.slice());
    streams[static_cast<std::size_t>(r)].synchronize();
  }
  for (auto& comm : comms) ASSERT_FALSE(comm->async_error().has_value()) << *comm->async_error();

  // The serial reference, in float64 (integers exactly).
  for (int r = 0; r < n; ++r) {
    const auto* p = static_cast<const std::byte*>(stage[static_cast<std::size_t>(r)].host_data());
    for (std::size_t i = 0; i < out_elems; ++i) {
      double ref = 0, sum_abs = 0;
      switch (c.kind) {
        case CollectiveKind::kBroadcast:
          ref = input[static_cast<std::size_t>(root)][i];
          break;
        case CollectiveKind::kAllGather:
          ref = input[i / count][i % count];
          break;
        case CollectiveKind::kAllReduce:
        case CollectiveKind::kReduceScatter: {
          const std::size_t at = c.kind == CollectiveKind::kAllReduce ? i : static_cast<std::size_t>(r) * count + i;
          ref = input[0][at];
          for (int k = 0; k < n; ++k) {
            const double x = input[static_cast<std::size_t>(k)][at];
            sum_abs += std::abs(x);
            if (k == 0) continue;
            if (c.op == ReduceOp::kMax)
              ref = std::max(ref, x);
            else if (c.op == ReduceOp::kMin)
              ref = std::min(ref, x);
            else
              ref += x;
          }
          if (c.op == ReduceOp::kAverage) ref = is_integer(c.dtype) ? std::trunc(ref / n) : ref / n;
          break;
        }
      }
      const double got = decode(c.dtype, p + i * es);
      const bool exact = is_integer(c.dtype) || c.kind == CollectiveKind::kBroadcast ||
                         c.kind == CollectiveKind::kAllGather || c.op == ReduceOp::kMax || c.op == ReduceOp::kMin;
      if (exact) {
        ASSERT_EQ(got, ref) << "rank " << r << " element " << i;
      } else {
        ASSERT_LE(std::abs(got - ref), bound(c.dtype, n, sum_abs, ref)) << "rank " << r << " element " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(InProcess, EveryCollective, ::testing::ValuesIn(all_cases()), case_name);

}  // namespace
