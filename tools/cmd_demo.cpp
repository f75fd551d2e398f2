// `stepgraph demo`: the main job. Trains the demo MLP twice from one seed,
// eagerly and by graph replay, and compares the parameters bit for bit
// (tools/demo/include/stepgraph/demo/mlp.h).
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <stepgraph/collectives/launch.h>
#include <stepgraph/collectives/local_device.h>
#include <stepgraph/demo/data_parallel.h>
#if STEPGRAPH_HAVE_MPI
#include <stepgraph/collectives/mpi.h>
#endif
#if STEPGRAPH_HAVE_NCCL
#include <stepgraph/collectives/nccl.h>
#endif
#include <stepgraph/core/error.h>
#include <stepgraph/demo/amp.h>
#include <stepgraph/demo/mlp.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/metrics.h>
#include <stepgraph/runtime/trace.h>
#include <stepgraph/topology/topology.h>

#include "command.h"

namespace {

namespace rt = stepgraph::runtime;
namespace demo = stepgraph::demo;

struct DemoCliOptions {
  std::string backend = "auto";
  int steps = 200;
  int warmup = 3;
  std::uint64_t seed = 1;
  int batch = 64;
  float learning_rate = 0.05f;
  int devices = 1;
  bool no_buckets = false;
  bool ranks = false;
  int deadline_ms = 0;
  int fault_rank = -1;
  int fault_step = 0;
  std::string fault_kind = "kill";
  int metrics_port = -1;
  std::string metrics_address = "127.0.0.1";
  double hold_s = 0;
  std::string trace_path;
  bool amp = false;
  int growth_interval = 2000;
  std::vector<int> overflow_steps;
};

volatile std::sig_atomic_t g_stop_holding = 0;
extern "C" void stop_holding(int) {
  g_stop_holding = 1;
}

/// Keeps serving the final metrics for up to `seconds`, or until SIGTERM or
/// SIGINT (which then end the demo normally, exit status as before): a
/// scraper gets the final values without racing the demo's exit.
void hold_metrics(const rt::MetricsServer& server, double seconds) {
  std::printf("metrics: holding for up to %.0f s (SIGTERM or SIGINT ends it)\n", seconds);
  std::fflush(stdout);
  g_stop_holding = 0;
  auto* old_term = std::signal(SIGTERM, stop_holding);
  auto* old_int = std::signal(SIGINT, stop_holding);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (g_stop_holding == 0 && std::chrono::steady_clock::now() < until)
    (void)server.wait_for_scrapes(server.scrapes() + 1, std::chrono::milliseconds(50));
  std::signal(SIGTERM, old_term);
  std::signal(SIGINT, old_int);
  std::printf("metrics: %llu scrape(s) served; stopping\n", static_cast<unsigned long long>(server.scrapes()));
}

/// `mpirun -np N stepgraph demo --ranks`: one rank per process, the MPI
/// communicator, rank 0 prints the comparison; every rank exits non-zero if
/// the check fails.
int run_ranks_command(const DemoCliOptions& cli) {
#if STEPGRAPH_HAVE_MPI
  namespace col = stepgraph::collectives;
  col::MpiSession session;
  const col::LaunchInfo launch = col::mpi_launch_info();
  const bool cuda = cli.backend == "cuda";
  if (cli.backend != "auto" && cli.backend != "host" && !cuda)
    throw stepgraph::InvalidArgument(fmt::format("demo --ranks: unknown backend '{}' (host or cuda)", cli.backend));
  // One device per process, and the process bound near it (Note [One
  // device per local rank]); every local rank computes the same plan.
  const col::LocalDevice dev = col::mpi_choose_local_device(stepgraph::topology::Topology::live(),
                                                            cuda ? col::DeviceKind::kGpu : col::DeviceKind::kHost);
  const stepgraph::topology::CpuSet bound = col::bind_process(dev);
  std::printf("rank %d (local %d of %d): %s; cpus %s\n", launch.rank, launch.local_rank, launch.local_size,
              dev.reason.c_str(), bound.empty() ? "unchanged" : bound.to_string().c_str());
  std::fflush(stdout);
  rt::BackendOptions bo;
  bo.host_devices = 1;
  bo.bind_workers = false;  // the process is bound already
  auto backend = rt::Backend::create(cuda ? "cuda" : "host", bo);
  demo::RanksReport r;
  {
    std::shared_ptr<col::Communicator> comm, verify;
    if (cuda) {
#if STEPGRAPH_HAVE_NCCL
      comm = col::make_nccl_communicator_over_mpi(backend, dev.cuda_device);
      verify = col::make_nccl_communicator_over_mpi(backend, dev.cuda_device);
#else
      throw stepgraph::InvalidState("demo --ranks --backend cuda: this build has no NCCL");
#endif
    } else {
      comm = col::make_mpi_communicator(backend, 0);
      verify = col::make_mpi_communicator(backend, 0);
    }
    demo::DemoOptions o;
    o.backend = cuda ? "cuda" : "host";
    o.steps = cli.steps;
    o.warmup = cli.warmup;
    o.seed = cli.seed;
    o.shape.batch = cli.batch;
    o.learning_rate = cli.learning_rate;
    demo::RankFault fault;
    fault.rank = cli.fault_rank;
    fault.step = cli.fault_step;
    fault.signal = cli.fault_kind == "stop" ? SIGSTOP : SIGKILL;
    try {
      r = demo::run_ranks_demo(o, comm, verify, std::chrono::milliseconds(cli.deadline_ms), fault);
    } catch (const std::exception& e) {
      // A peer may be stuck in a collective with this rank: end the whole
      // job (MPI_Finalize would wait for it), so that every rank and
      // mpirun return.
      col::mpi_abort_job(3, fmt::format("rank {} failed: {}", launch.rank, e.what()));
    }
  }
  if (r.rank == 0) {
    std::printf(
        "stepgraph demo: data-parallel MLP across %d processes (%s, launch info from %s), global batch %d "
        "(%d per rank)\n",
        r.ranks, cuda ? "cuda backend, NCCL bootstrapped over MPI" : "host backend, MPI", launch.source.c_str(),
        r.global_batch, r.global_batch / r.ranks);
    std::printf("  gradient AllReduce %zu bucket(s), overlapped with backward, captured in each rank's graph\n",
                r.buckets);
    std::printf("  median step time   %.1f us (rank 0, replayed)\n", r.replay_median_us);
    std::printf("  vs float64 ref     max |param diff| %.3g (data-parallel across ranks, float32)\n", r.dp_vs_f64);
    std::printf("                     max |param diff| %.3g (single process, whole batch, float32)\n",
                r.single_f32_vs_f64);
    std::printf("  bound              %.3g (8 x the single-process float32 departure, at least 1e-6)\n", r.bound);
    std::printf("  ranks              max |param diff| %.9g\n", r.ranks_disagree);
    std::printf(r.ok() ? "OK: training across ranks matches the float64 single-process reference within the bound\n"
                       : "MISMATCH: training across ranks is outside its bound or the ranks disagree\n");
  }
  return r.ok() ? 0 : 1;
#else
  (void)cli;
  std::fprintf(stderr, "stepgraph demo --ranks: this build has no MPI support (install libopenmpi-dev and rebuild)\n");
  return 2;
#endif
}

int run_data_parallel_command(const DemoCliOptions& cli) {
  demo::DataParallelDemoOptions o;
  o.base.backend = cli.backend == "auto" ? "host" : cli.backend;
  o.base.steps = cli.steps;
  o.base.warmup = cli.warmup;
  o.base.seed = cli.seed;
  o.base.shape.batch = cli.batch;
  o.base.learning_rate = cli.learning_rate;
  o.devices = cli.devices;
  o.bucketed = !cli.no_buckets;
  const demo::DataParallelReport r = demo::run_data_parallel_demo(o);
  std::printf("stepgraph demo: data-parallel MLP on %d %s devices, global batch %d (%d per replica), seed %llu\n",
              r.devices, r.backend.c_str(), r.global_batch, r.global_batch / r.devices,
              static_cast<unsigned long long>(cli.seed));
  std::printf("  gradient AllReduce %zu bucket(s) (%s), %zu collective node(s) in the captured step\n", r.buckets,
              o.bucketed ? "overlapped with backward" : "one AllReduce after backward", r.collective_nodes);
  std::printf("  median step time   %.1f us (replayed, all replicas)\n", r.replay_median_us);
  std::printf("  loss               first %.6g, last %.6g\n", static_cast<double>(r.first_loss),
              static_cast<double>(r.last_loss));
  std::printf("  vs float64 ref     max |param diff| %.3g (data-parallel, float32)\n", r.dp_vs_f64);
  std::printf("                     max |param diff| %.3g (single device, whole batch, float32)\n",
              r.single_f32_vs_f64);
  std::printf("  bound              %.3g (8 x the single-device float32 departure, at least 1e-6)\n", r.bound);
  std::printf("  captured vs eager  max |param diff| %.9g (data-parallel runs)\n", r.captured_vs_eager);
  std::printf("  replicas           max |param diff| %.9g\n", r.replica_diff);
  if (!r.ok()) {
    std::printf("MISMATCH: data-parallel training is outside its bound or not reproducible\n");
    return 1;
  }
  std::printf(
      "OK: data-parallel training matches the float64 single-device reference within the bound, and "
      "captured equals eager bit for bit\n");
  return 0;
}

/// `stepgraph demo --amp`: the MLP in mixed precision with the GradScaler
/// inside the graph (docs/amp.md), eager and replayed, compared bit for bit.
int run_amp_command(const DemoCliOptions& cli) {
  demo::AmpDemoOptions o;
  o.base.backend = cli.backend;
  o.base.steps = cli.steps;
  o.base.warmup = cli.warmup;
  o.base.seed = cli.seed;
  o.base.shape.batch = cli.batch;
  o.base.learning_rate = cli.learning_rate;
  o.scaler.growth_interval = cli.growth_interval;
  o.overflow_steps = cli.overflow_steps;
  const demo::AmpReport r = demo::run_amp_demo(o);
  const auto& w = r.replay_waits;
  std::printf(
      "stepgraph demo --amp: MLP in mixed precision (binary16 activations and gradients, float32 master "
      "weights), GradScaler in the graph\n");
  std::printf("  backend            %s\n", r.backend.c_str());
  std::printf("  steps              %d (replay run: %d eager warm-up(s), 1 capture, %d replay(s))\n", r.steps,
              cli.warmup, r.steps - cli.warmup);
  std::printf("  graph              %zu node(s) per step (the optimizer inside an IF node)\n", r.graph_nodes);
  std::printf(
      "  scaler             growth interval %d; %d step(s) skipped on overflow (%zu injected); final scale %g\n",
      cli.growth_interval, r.skipped_steps, cli.overflow_steps.size(), static_cast<double>(r.final_scale));
  std::printf("  loss               first %.6g, last %.6g\n", static_cast<double>(r.first_loss),
              static_cast<double>(r.last_loss));
  std::printf("  max |param diff|   %.9g (eager vs replayed); scaler states and losses %s\n", r.max_abs_param_diff,
              r.scaler_identical ? "identical at every step" : "DIFFER");
  std::printf(
      "  host waits         over %d replayed step(s): %llu stream / %llu device synchronisation(s); "
      "%llu event wait(s) and %llu poll(s), all on the executor's %d completion event(s) (%llu waited on "
      "in the whole run)\n",
      r.replayed_steps, static_cast<unsigned long long>(w.stream_synchronize),
      static_cast<unsigned long long>(w.device_synchronize),
      static_cast<unsigned long long>(w.event_synchronize + w.event_wait_for),
      static_cast<unsigned long long>(w.event_query), r.slots, static_cast<unsigned long long>(r.events_waited_on));
  if (!r.ok()) {
    std::printf("MISMATCH: replayed AMP training differs from eager, or a replayed step waited on the host\n");
    return 1;
  }
  std::printf("OK: replayed AMP training is bit-identical to eager, with no host synchronisation per replayed step\n");
  return 0;
}

int run_demo_command(const DemoCliOptions& cli) {
  if ((cli.metrics_port >= 0 || !cli.trace_path.empty()) && (cli.ranks || cli.devices > 1 || cli.amp))
    throw stepgraph::InvalidArgument(
        "demo: --metrics-port and --trace observe the single-device float32 demo; drop --ranks/--devices/--amp, or "
        "set STEPGRAPH_METRICS_PORT to serve every executor's metrics");
  if (cli.ranks) return run_ranks_command(cli);
  if (cli.amp) return run_amp_command(cli);
  if (cli.devices > 1) return run_data_parallel_command(cli);
  demo::DemoOptions o;
  o.backend = cli.backend;
  o.steps = cli.steps;
  o.warmup = cli.warmup;
  o.seed = cli.seed;
  o.shape.batch = cli.batch;
  o.learning_rate = cli.learning_rate;
  std::unique_ptr<rt::MetricsServer> server;
  if (cli.metrics_port >= 0) {
    o.metrics = rt::MetricsRegistry::create();
    server =
        std::make_unique<rt::MetricsServer>(o.metrics, rt::MetricsServerOptions{cli.metrics_address, cli.metrics_port});
    // The port first, flushed: a scraper started alongside (the scrape test)
    // reads it from here when --metrics-port is 0.
    std::printf("metrics: serving http://%s:%d/metrics\n", server->address().c_str(), server->port());
    std::fflush(stdout);
  }
  if (!cli.trace_path.empty()) o.trace = rt::TraceRecorder::create();
  const demo::DemoReport r = demo::run_demo(o);

  std::printf("stepgraph demo: MLP %d -> %d (ReLU) -> 1, MSE, SGD, batch %d, seed %llu\n", r.shape.inputs,
              r.shape.hidden, r.shape.batch, static_cast<unsigned long long>(r.seed));
  std::printf("  learning rate      %.4g decaying linearly to %.4g (read by the graph from the step scalars)\n",
              static_cast<double>(r.learning_rate), static_cast<double>(r.learning_rate) * 0.1);
  std::printf("  backend            %s\n", r.backend.c_str());
  std::printf("  device             %s\n", r.device.c_str());
  std::printf("  steps              %d (replay run: %d eager warm-up(s), 1 capture, %d replay(s))\n", r.steps, r.warmup,
              r.steps - r.warmup);
  std::printf("  graph              %zu node(s) per step\n", r.graph_nodes);
  std::printf("  median step time   eager %.1f us, replayed %.1f us\n", r.eager_median_us, r.replay_median_us);
  std::printf("  speedup            %.2fx (replayed vs eager)\n", r.speedup);
  std::printf("  capture step       %.1f us (capture + instantiate + first launch, one-off)\n", r.capture_step_us);
  std::printf("  loss               first %.6g, last %.6g\n", static_cast<double>(r.first_loss),
              static_cast<double>(r.last_loss));
  std::printf("  max |param diff|   %.9g (eager vs replayed, after step %d)\n", r.max_abs_param_diff, r.steps);
  std::printf("  max |loss diff|    %.9g (over all steps)\n", r.max_abs_loss_diff);
  if (o.trace) {
    o.trace->write(cli.trace_path);
    std::printf("  trace              %zu span(s) of the replay run written to %s\n", o.trace->span_count(),
                cli.trace_path.c_str());
  }
  if (server) {
    std::printf("  metrics            stepgraph_steps_completed_total %d, stepgraph_demo_loss %.9g\n", r.steps,
                static_cast<double>(r.last_loss));
  }
  const int rc = r.identical() ? 0 : 1;
  std::printf(rc == 0 ? "OK: replayed training is bit-identical to eager training\n"
                      : "MISMATCH: replayed training differs from eager training\n");
  if (server && cli.hold_s > 0) hold_metrics(*server, cli.hold_s);
  return rc;
}

stepgraph::tools::Command demo_cmd{
    "demo", "train a small MLP eagerly and by graph replay; check the parameters match exactly", [](CLI::App& app) {
      auto o = std::make_shared<DemoCliOptions>();
      app.add_option("--backend", o->backend, "auto (cuda when a device exists, else host), host or cuda")
          ->check(CLI::IsMember({"auto", "host", "cuda"}))
          ->capture_default_str();
      app.add_option("--steps", o->steps, "training steps of each run")
          ->check(CLI::PositiveNumber)
          ->capture_default_str();
      app.add_option("--warmup", o->warmup, "eager warm-up steps of the replay run before capture")
          ->check(CLI::NonNegativeNumber)
          ->capture_default_str();
      app.add_option("--seed", o->seed, "seed of the data and the initial parameters")->capture_default_str();
      app.add_option("--batch", o->batch, "batch size")->check(CLI::PositiveNumber)->capture_default_str();
      app.add_option("--lr", o->learning_rate, "initial learning rate")
          ->check(CLI::PositiveNumber)
          ->capture_default_str();
      app.add_option("--devices", o->devices,
                     "train data-parallel on N devices (host devices; bucketed AllReduce) and compare with a float64 "
                     "single-device reference")
          ->check(CLI::PositiveNumber)
          ->capture_default_str();
      app.add_flag("--ranks", o->ranks,
                   "data-parallel across processes: run under mpirun -np N, one rank per process (MPI communicator)");
      app.add_option("--deadline-ms", o->deadline_ms, "with --ranks: the watchdog's deadline per replay (0: none)")
          ->check(CLI::NonNegativeNumber);
      app.add_option("--fault-rank", o->fault_rank, "with --ranks (tests): this rank fails at --fault-step");
      app.add_option("--fault-step", o->fault_step, "with --ranks (tests): the step the fault happens at");
      app.add_option("--fault", o->fault_kind, "with --ranks (tests): kill (the rank dies) or stop (SIGSTOP)")
          ->check(CLI::IsMember({"kill", "stop"}));
      app.add_flag("--no-buckets", o->no_buckets, "with --devices: one AllReduce after backward instead of buckets");
      app.add_option("--metrics-port", o->metrics_port,
                     "serve the replay run's metrics (Prometheus text format) at http://ADDRESS:PORT/metrics; 0: an "
                     "ephemeral port, printed first (docs/observability.md)")
          ->check(CLI::Range(0, 65535));
      app.add_option("--metrics-address", o->metrics_address, "with --metrics-port: the address to listen on")
          ->capture_default_str();
      app.add_option("--hold", o->hold_s,
                     "with --metrics-port: keep serving the final metrics up to this many seconds after the demo, "
                     "or until SIGTERM/SIGINT")
          ->check(CLI::NonNegativeNumber);
      app.add_option("--trace", o->trace_path,
                     "write a Chrome/Perfetto trace (JSON) of the replay run's replays to this file "
                     "(docs/observability.md)");
      app.add_flag("--amp", o->amp,
                   "mixed precision: binary16 activations and gradients, float32 master weights, dynamic loss "
                   "scaling decided in the graph (docs/amp.md)");
      app.add_option("--growth-interval", o->growth_interval, "with --amp: clean steps before the scale doubles")
          ->check(CLI::PositiveNumber)
          ->capture_default_str();
      app.add_option("--overflow-steps", o->overflow_steps,
                     "with --amp: steps whose batch gets a value beyond binary16's range (their optimizer step is "
                     "skipped)")
          ->delimiter(',');
      return [o]() -> int { return run_demo_command(*o); };
    }};

}  // namespace
