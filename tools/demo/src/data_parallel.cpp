// The data-parallel demo (Note [Data-parallel demo bound]).
#include <stepgraph/demo/data_parallel.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>

#include <stepgraph/collectives/bucketer.h>
#include <stepgraph/collectives/data_parallel.h>
#include <stepgraph/collectives/in_process.h>
#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

namespace stepgraph::demo {

namespace col = stepgraph::collectives;

namespace {

void check(const DataParallelDemoOptions& o) {
  STEPGRAPH_CHECK(o.devices >= 1, InvalidArgument, "demo --devices {}: give at least 1", o.devices);
  STEPGRAPH_CHECK(o.base.shape.batch % o.devices == 0, InvalidArgument,
                  "demo: the batch of {} does not split into {} equal shards; give a multiple of --devices",
                  o.base.shape.batch, o.devices);
  STEPGRAPH_CHECK(o.base.steps >= 1 && o.base.warmup >= 0 && o.base.warmup < o.base.steps, InvalidArgument,
                  "demo: warmup is {} with {} steps; give 0 <= warmup < steps", o.base.warmup, o.base.steps);
}

using Bucketers = std::shared_ptr<std::vector<std::unique_ptr<col::GradientBucketer>>>;

/// Gradients in ready order: [W2 | b2] then [W1 | b1]; stored in reverse
/// ready order, which is the MLP's parameter layout (checked).
col::BucketPlan mlp_bucket_plan(const MlpShape& shard, std::size_t first_bucket_cap_bytes) {
  const std::vector<col::GradientSpec> grads = {{"W2|b2", static_cast<std::size_t>(shard.hidden) + 1},
                                                {"W1|b1", shard.w2_offset()}};
  col::BucketOptions bo;
  bo.first_bucket_cap_bytes = first_bucket_cap_bytes != 0 ? first_bucket_cap_bytes : grads[0].count * sizeof(float);
  col::BucketPlan plan = col::plan_buckets(grads, bo);
  STEPGRAPH_INTERNAL_ASSERT(plan.storage_bytes == shard.param_count() * sizeof(float) &&
                                plan.gradients[0].offset == shard.w2_offset() * sizeof(float) &&
                                plan.gradients[1].offset == 0,
                            "bucket layout differs from the MLP's parameter layout");
  return plan;
}

/// The data-parallel MLP step of one replica: the bucketer (or the
/// communicator) of the replica's rank.
rt::StepFunction dp_step(const MlpShape& shard, Bucketers bucketers,
                         std::vector<std::shared_ptr<col::Communicator>> comms, bool bucketed) {
  const std::size_t np = shard.param_count();
  return [shard, bucketers, comms, bucketed, np](rt::StepContext& ctx) {
    const MlpStepBuffers b = mlp_step_buffers(ctx);
    const int rank = ctx.collectives().rank();
    MlpStepHooks hooks;
    if (bucketed) {
      auto& bucketer = *(*bucketers)[static_cast<std::size_t>(rank)];
      bucketer.begin(ctx.stream(), *b.grads);
      hooks.gradient_ready = [&](rt::StreamRef s, int g) { bucketer.ready(s, static_cast<std::size_t>(g)); };
      hooks.before_update = [&](rt::StreamRef s) { bucketer.finish(s); };
    } else {
      hooks.before_update = [&, rank](rt::StreamRef s) {
        comms[static_cast<std::size_t>(rank)]->all_reduce(s, *b.grads, 0, np, rt::DType::kFloat32,
                                                          rt::ReduceOp::kAverage, "allreduce all gradients");
      };
    }
    enqueue_mlp_step(ctx.stream(), shard, b, &hooks);
  };
}

}  // namespace

DataParallelRun train_mlp_data_parallel(const DataParallelDemoOptions& options, rt::ExecutionMode mode) {
  check(options);
  const DemoOptions& base = options.base;
  const int n = options.devices;
  MlpShape shard = base.shape;
  shard.batch = base.shape.batch / n;
  const std::size_t np = shard.param_count();

  std::shared_ptr<rt::Backend> backend = base.backend_instance;
  if (!backend) {
    rt::BackendOptions bo;
    bo.host_devices = n;
    backend = rt::Backend::create(base.backend, bo);
  }
  STEPGRAPH_CHECK(backend->device_count() >= n, InvalidArgument, "demo --devices {}: the {} backend has {} device(s)",
                  n, backend->name(), backend->device_count());
  std::vector<int> devices;
  for (int r = 0; r < n; ++r) devices.push_back(r);
  STEPGRAPH_CHECK(backend->kind() == rt::BackendKind::kHost, InvalidArgument,
                  "demo --devices {} on the {} backend: the NCCL group for the demo lands with the next issue; run "
                  "with --backend host",
                  n, backend->name());
  auto comms = col::make_in_process_group(backend, devices);

  const col::BucketPlan plan = mlp_bucket_plan(shard, options.first_bucket_cap_bytes);
  auto bucketers = std::make_shared<std::vector<std::unique_ptr<col::GradientBucketer>>>();
  for (int r = 0; r < n; ++r) bucketers->push_back(std::make_unique<col::GradientBucketer>(plan, comms[r]));

  auto step = dp_step(shard, bucketers, comms, options.bucketed);

  col::DataParallelOptions dpo;
  dpo.devices = devices;
  dpo.communicators = comms;
  dpo.executor.backend_instance = backend;
  dpo.executor.warmup = base.warmup;
  dpo.executor.max_in_flight = base.max_in_flight;
  dpo.executor.mode = mode;
  col::DataParallelExecutor dp(mlp_step_spec(shard), step, dpo);
  const auto init = mlp_init_params(shard, base.seed);
  dp.write_state("params", init.data(), init.size() * sizeof(float));
  if (mode == rt::ExecutionMode::kGraph) dp.prepare();  // warm-ups and capture on every replica at once

  DataParallelRun run;
  run.buckets = options.bucketed ? plan.buckets.size() : 1;
  const auto in = static_cast<std::size_t>(base.shape.inputs);
  const auto shard_rows = static_cast<std::size_t>(shard.batch);
  std::vector<float> x(static_cast<std::size_t>(base.shape.batch) * in), y(static_cast<std::size_t>(base.shape.batch));
  for (int s = 0; s < base.steps; ++s) {
    mlp_make_batch(base.shape, base.seed, s, x, y);  // the global batch, split by rows
    dp.set_learning_rate(mlp_learning_rate(base.learning_rate, s, base.steps));
    const auto t0 = std::chrono::steady_clock::now();
    auto slots = dp.acquire_inputs();
    for (int r = 0; r < n; ++r) {
      const auto at = static_cast<std::size_t>(r) * shard_rows;
      std::memcpy(slots[static_cast<std::size_t>(r)].input("x").host_data(), x.data() + at * in,
                  shard_rows * in * sizeof(float));
      std::memcpy(slots[static_cast<std::size_t>(r)].input("y").host_data(), y.data() + at, shard_rows * sizeof(float));
    }
    auto h = dp.replay(std::move(slots));
    if (h.wait() != rt::ReplayStatus::kDone) {
      const auto err = h.error();
      throw Error(fmt::format("demo --devices {}: step {} failed: {}", n, s,
                              err ? err->message : std::string("no error reported")));
    }
    double loss = 0;
    for (const auto& r : h.replicas()) loss += r.output_span<const float>("loss")[0];
    h.release();
    const auto t1 = std::chrono::steady_clock::now();
    run.losses.push_back(static_cast<float>(loss / n));
    run.step_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  dp.synchronize();
  run.params.resize(np);
  dp.read_state(0, "params", run.params.data(), np * sizeof(float));
  for (int r = 1; r < n; ++r) {
    std::vector<float> other(np);
    dp.read_state(r, "params", other.data(), np * sizeof(float));
    run.max_replica_param_diff = std::max(run.max_replica_param_diff, max_abs_diff(run.params, other));
  }
  if (mode == rt::ExecutionMode::kGraph) {
    const rt::GraphInfo info = dp.replica(0).graph_info();
    run.graph_nodes = info.nodes.size();
    run.collective_nodes = info.count(rt::NodeKind::kCollective);
  }
  dp.close();
  return run;
}

std::vector<double> mlp_reference_train_f64(const DemoOptions& options) {
  const MlpShape& s = options.shape;
  const auto B = static_cast<std::size_t>(s.batch), I = static_cast<std::size_t>(s.inputs),
             H = static_cast<std::size_t>(s.hidden);
  const auto init = mlp_init_params(s, options.seed);
  std::vector<double> p(init.begin(), init.end()), g(p.size());
  std::vector<float> xf(B * I), yf(B);
  std::vector<double> act(B * H), out(B), dout(B), dact(B * H);
  for (int step = 0; step < options.steps; ++step) {
    mlp_make_batch(s, options.seed, step, xf, yf);
    for (std::size_t b = 0; b < B; ++b) {
      for (std::size_t j = 0; j < H; ++j) {
        double a = p[s.b1_offset() + j];
        for (std::size_t k = 0; k < I; ++k) a += xf[b * I + k] * p[j * I + k];
        act[b * H + j] = a > 0 ? a : 0;
      }
      double o = p[s.b2_offset()];
      for (std::size_t j = 0; j < H; ++j) o += act[b * H + j] * p[s.w2_offset() + j];
      out[b] = o;
      dout[b] = 2.0 * (o - yf[b]) / static_cast<double>(B);
    }
    std::fill(g.begin(), g.end(), 0.0);
    for (std::size_t b = 0; b < B; ++b) {
      for (std::size_t j = 0; j < H; ++j) {
        g[s.w2_offset() + j] += dout[b] * act[b * H + j];
        dact[b * H + j] = act[b * H + j] > 0 ? dout[b] * p[s.w2_offset() + j] : 0.0;
        for (std::size_t k = 0; k < I; ++k) g[j * I + k] += dact[b * H + j] * xf[b * I + k];
        g[s.b1_offset() + j] += dact[b * H + j];
      }
      g[s.b2_offset()] += dout[b];
    }
    // The learning rate as the executor hands it to the kernels: a float.
    const double lr = mlp_learning_rate(options.learning_rate, step, options.steps);
    for (std::size_t i = 0; i < p.size(); ++i) p[i] -= lr * g[i];
  }
  return p;
}

DataParallelReport run_data_parallel_demo(const DataParallelDemoOptions& options) {
  check(options);
  DataParallelDemoOptions o = options;
  if (!o.base.backend_instance) {
    rt::BackendOptions bo;
    bo.host_devices = o.devices;
    o.base.backend_instance = rt::Backend::create(o.base.backend, bo);
  }
  DataParallelReport r;
  r.backend = std::string(o.base.backend_instance->name());
  r.devices = o.devices;
  r.steps = o.base.steps;
  r.global_batch = o.base.shape.batch;

  STEPGRAPH_INFO(kTools, "demo: data-parallel eager run on {} devices", o.devices);
  const DataParallelRun eager = train_mlp_data_parallel(o, rt::ExecutionMode::kEager);
  STEPGRAPH_INFO(kTools, "demo: data-parallel replay run on {} devices", o.devices);
  const DataParallelRun graph = train_mlp_data_parallel(o, rt::ExecutionMode::kGraph);
  STEPGRAPH_INFO(kTools, "demo: single-device float32 run and float64 reference on the whole batch");
  DemoOptions single = o.base;
  const TrainingRun f32 = train_mlp(single, rt::ExecutionMode::kGraph);
  const std::vector<double> f64 = mlp_reference_train_f64(o.base);

  auto diff64 = [&](const std::vector<float>& a) {
    double w = 0;
    for (std::size_t i = 0; i < a.size(); ++i) w = std::max(w, std::abs(static_cast<double>(a[i]) - f64[i]));
    return w;
  };
  r.buckets = graph.buckets;
  r.collective_nodes = graph.collective_nodes;
  r.dp_vs_f64 = diff64(graph.params);
  r.single_f32_vs_f64 = diff64(f32.params);
  r.bound = std::max(8.0 * r.single_f32_vs_f64, 1e-6);
  r.captured_vs_eager = max_abs_diff(graph.params, eager.params);
  r.replica_diff = std::max(graph.max_replica_param_diff, eager.max_replica_param_diff);
  const auto first = static_cast<std::size_t>(o.base.warmup) + 1;
  r.replay_median_us = graph.step_us.size() > first ? median(std::span(graph.step_us).subspan(first)) : 0;
  r.first_loss = graph.losses.front();
  r.last_loss = graph.losses.back();
  return r;
}

}  // namespace stepgraph::demo

namespace stepgraph::demo {

RanksReport run_ranks_demo(const DemoOptions& options, std::shared_ptr<col::Communicator> comm,
                           std::shared_ptr<col::Communicator> verify, std::chrono::milliseconds deadline,
                           RankFault fault) {
  STEPGRAPH_CHECK(comm && verify && comm->world_size() == verify->world_size() && comm->rank() == verify->rank(),
                  InvalidArgument, "demo --ranks: give two communicators of the same ranks");
  const int n = comm->world_size();
  const int rank = comm->rank();
  DataParallelDemoOptions dpo;
  dpo.base = options;
  dpo.devices = n;
  check(dpo);
  MlpShape shard = options.shape;
  shard.batch = options.shape.batch / n;
  const std::size_t np = shard.param_count();
  auto& backend = comm->backend();

  const col::BucketPlan plan = mlp_bucket_plan(shard, 0);
  auto bucketers = std::make_shared<std::vector<std::unique_ptr<col::GradientBucketer>>>(static_cast<std::size_t>(n));
  (*bucketers)[static_cast<std::size_t>(rank)] = std::make_unique<col::GradientBucketer>(plan, comm);
  std::vector<std::shared_ptr<col::Communicator>> comms(static_cast<std::size_t>(n));
  comms[static_cast<std::size_t>(rank)] = comm;

  rt::ExecutorOptions eo;
  eo.backend_instance = comm->backend_ptr();
  eo.device = comm->device();
  eo.warmup = options.warmup;
  eo.max_in_flight = options.max_in_flight;
  eo.collectives = comm;
  eo.deadline = deadline;
  rt::StepExecutor executor(mlp_step_spec(shard), dp_step(shard, bucketers, comms, true), eo);
  const auto init = mlp_init_params(shard, options.seed);
  executor.write_state("params", init.data(), init.size() * sizeof(float));

  RanksReport r;
  r.rank = rank;
  r.ranks = n;
  r.global_batch = options.shape.batch;
  r.buckets = plan.buckets.size();
  const auto in = static_cast<std::size_t>(options.shape.inputs);
  const auto rows = static_cast<std::size_t>(shard.batch);
  std::vector<float> x(static_cast<std::size_t>(options.shape.batch) * in),
      y(static_cast<std::size_t>(options.shape.batch));
  std::vector<double> step_us;
  std::vector<float> losses;
  for (int s = 0; s < options.steps; ++s) {
    if (fault.rank == rank && fault.step == s) std::raise(fault.signal);  // SIGSTOP: resumes only if continued
    mlp_make_batch(options.shape, options.seed, s, x, y);
    executor.set_learning_rate(mlp_learning_rate(options.learning_rate, s, options.steps));
    const auto t0 = std::chrono::steady_clock::now();
    rt::InputSlot slot = executor.acquire_inputs();
    const auto at = static_cast<std::size_t>(rank) * rows;
    std::memcpy(slot.input("x").host_data(), x.data() + at * in, rows * in * sizeof(float));
    std::memcpy(slot.input("y").host_data(), y.data() + at, rows * sizeof(float));
    rt::ReplayHandle h = executor.replay(std::move(slot));
    if (h.wait() != rt::ReplayStatus::kDone) {
      const auto err = h.error();
      throw Error(fmt::format("demo --ranks: rank {} step {} failed: {}", rank, s,
                              err ? err->message : std::string("no error reported")));
    }
    losses.push_back(h.output_span<const float>("loss")[0]);
    h.release();
    step_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  executor.synchronize();
  std::vector<float> params(np);
  executor.read_state("params", params.data(), np * sizeof(float));
  executor.close();

  // Do the ranks agree? Elementwise max and min over ranks, eagerly, on the
  // second communicator (the first serves captured graphs only).
  {
    auto stream = backend.create_stream(verify->device());
    auto hi = backend.allocate(verify->device(), np * sizeof(float));
    auto lo = backend.allocate(verify->device(), np * sizeof(float));
    auto stage = backend.allocate_pinned(2 * np * sizeof(float));
    std::memcpy(stage.host_data(), params.data(), np * sizeof(float));
    stream.copy(hi.slice(), stage.slice(0, np * sizeof(float)));
    stream.copy(lo.slice(), stage.slice(0, np * sizeof(float)));
    verify->all_reduce(stream, hi, 0, np, rt::DType::kFloat32, rt::ReduceOp::kMax, "check: max over ranks");
    verify->all_reduce(stream, lo, 0, np, rt::DType::kFloat32, rt::ReduceOp::kMin, "check: min over ranks");
    stream.copy(stage.slice(0, np * sizeof(float)), hi.slice());
    stream.copy(stage.slice(np * sizeof(float), np * sizeof(float)), lo.slice());
    stream.synchronize();
    verify->check();
    const auto* p = static_cast<const float*>(stage.host_data());
    for (std::size_t i = 0; i < np; ++i)
      r.ranks_disagree = std::max(r.ranks_disagree, static_cast<double>(p[i]) - static_cast<double>(p[np + i]));
  }

  DemoOptions single = options;
  single.backend = "host";
  single.backend_instance = nullptr;
  const TrainingRun f32 = train_mlp(single, rt::ExecutionMode::kGraph);
  const std::vector<double> f64 = mlp_reference_train_f64(options);
  auto diff64 = [&](const std::vector<float>& a) {
    double w = 0;
    for (std::size_t i = 0; i < a.size(); ++i) w = std::max(w, std::abs(static_cast<double>(a[i]) - f64[i]));
    return w;
  };
  r.dp_vs_f64 = diff64(params);
  r.single_f32_vs_f64 = diff64(f32.params);
  r.bound = std::max(8.0 * r.single_f32_vs_f64, 1e-6);
  const auto first = static_cast<std::size_t>(options.warmup) + 1;
  r.replay_median_us = step_us.size() > first ? median(std::span(step_us).subspan(first)) : 0;
  r.first_loss = losses.front();
  r.last_loss = losses.back();
  return r;
}

}  // namespace stepgraph::demo
