// `stepgraph torch-demo`: a small MLP and one transformer encoder block
// trained through the TorchStepExecutor and by a plain libtorch loop on the
// same data (torch_demo.h). Compiled into `stepgraph` only where
// stepgraph::torch is built (tools/CMakeLists.txt).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <stepgraph/runtime/backend.h>
#if STEPGRAPH_HAVE_MPI
#include <stepgraph/collectives/mpi.h>
#endif

#include "../command.h"
#include "torch_demo.h"

namespace {

namespace td = stepgraph::torch_demo;

struct TorchDemoOptions {
  std::string model = "both";
  int steps = 50;
  int devices = 1;
  int batch = 32;
  int threads = 1;
  bool ranks = false;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

/// One model: both runs, printed; true when the comparison holds.
bool run_model(td::Model m, const TorchDemoOptions& o) {
  td::Workload w;
  w.model = m;
  w.batch = o.batch;
  const td::RunResult plain = td::train_plain(w, o.steps);
  const td::RunResult ours = td::train_executor(w, o.steps, o.devices);
  const double diff = td::max_param_diff(*ours.module, *plain.module);
  // Single device: the same operators in the same order, bit for bit.
  // Data-parallel: the gradient of each shard, averaged, is the whole
  // batch's up to float32 rounding of the sums.
  const double bound = o.devices == 1 ? 0.0 : 1e-4;
  const bool ok = diff <= bound && ours.replica_diff == 0.0;
  std::printf("%s (%d step(s), batch %d%s)\n", td::to_string(m), o.steps, o.batch,
              o.devices > 1 ? (", " + std::to_string(o.devices) + " in-process ranks").c_str() : "");
  std::printf("  loss             plain first %.6g last %.6g; executor first %.6g last %.6g%s\n",
              static_cast<double>(plain.losses.front()), static_cast<double>(plain.losses.back()),
              static_cast<double>(ours.losses.front()), static_cast<double>(ours.losses.back()),
              o.devices > 1 ? " (rank 0's shard)" : "");
  std::printf("  max |param diff| %.9g (executor vs plain libtorch loop; bound %g)\n", diff, bound);
  if (o.devices > 1) std::printf("  replicas         max |param diff| %.9g\n", ours.replica_diff);
  std::printf("  median step      plain %.1f us, executor %.1f us (%.3fx)\n", median(plain.step_us),
              median(ours.step_us), median(ours.step_us) / median(plain.step_us));
  return ok;
}

/// `mpirun -np N stepgraph torch-demo --ranks`: one rank per process over
/// the MPI communicator; every rank compares with the plain loop on the
/// whole batch; rank 0 prints.
int run_ranks(const TorchDemoOptions& o) {
#if STEPGRAPH_HAVE_MPI
  namespace col = stepgraph::collectives;
  col::MpiSession session;
  const col::LaunchInfo launch = col::mpi_launch_info();
  stepgraph::runtime::BackendOptions bo;
  bo.host_devices = 1;
  auto backend = stepgraph::runtime::Backend::create("host", bo);
  bool ok = true;
  {
    for (td::Model m : {td::Model::kMlp, td::Model::kTransformer}) {
      if ((o.model == "mlp" && m != td::Model::kMlp) || (o.model == "transformer" && m != td::Model::kTransformer))
        continue;
      // Communicators of their own per model: the first executor's
      // captured collectives would forbid the next one's eager warm-ups.
      auto comm = col::make_mpi_communicator(backend, 0);
      auto verify = col::make_mpi_communicator(backend, 0);
      td::Workload w;
      w.model = m;
      w.batch = o.batch;
      const td::RunResult plain = td::train_plain(w, o.steps);
      const td::RunResult ours = td::train_executor_ranks(w, o.steps, comm, verify);
      const double diff = td::max_param_diff(*ours.module, *plain.module);
      const bool good = diff <= 1e-4 && ours.replica_diff == 0.0;
      ok = ok && good;
      if (launch.rank == 0) {
        std::printf("%s (%d step(s), global batch %d, %d ranks over MPI)\n", td::to_string(m), o.steps, o.batch,
                    launch.size);
        std::printf("  loss             plain last %.6g; executor last %.6g (rank 0's shard)\n",
                    static_cast<double>(plain.losses.back()), static_cast<double>(ours.losses.back()));
        std::printf("  max |param diff| %.9g (rank 0 vs plain libtorch loop on the whole batch; bound 1e-4)\n", diff);
        std::printf("  ranks            max |param diff| %.9g\n", ours.replica_diff);
      }
    }
  }
  if (launch.rank == 0)
    std::printf(ok ? "OK: training through the executor matches the plain libtorch loop\n"
                   : "MISMATCH: training through the executor differs from the plain libtorch loop\n");
  return ok ? 0 : 1;
#else
  (void)o;
  std::fprintf(stderr, "stepgraph torch-demo --ranks: this build has no MPI support\n");
  return 2;
#endif
}

int run_torch_demo(const TorchDemoOptions& o) {
  ::torch::set_num_threads(o.threads);
  if (o.ranks) return run_ranks(o);
  std::printf("stepgraph torch-demo: libtorch %s (CPU), torch threads %d, host backend\n", TORCH_VERSION, o.threads);
  bool ok = true;
  if (o.model != "transformer") ok = run_model(td::Model::kMlp, o) && ok;
  if (o.model != "mlp") ok = run_model(td::Model::kTransformer, o) && ok;
  std::printf(ok ? "OK: training through the executor matches the plain libtorch loop\n"
                 : "MISMATCH: training through the executor differs from the plain libtorch loop\n");
  return ok ? 0 : 1;
}

stepgraph::tools::Command torch_demo_cmd{
    "torch-demo",
    "train a libtorch MLP and transformer block through the TorchStepExecutor and by a plain libtorch loop; compare",
    [](CLI::App& app) {
      auto o = std::make_shared<TorchDemoOptions>();
      app.add_option("--model", o->model, "mlp, transformer or both")
          ->check(CLI::IsMember({"mlp", "transformer", "both"}))
          ->capture_default_str();
      app.add_option("--steps", o->steps, "training steps")->check(CLI::PositiveNumber)->capture_default_str();
      app.add_option("--devices", o->devices, "in-process data-parallel ranks (host devices)")
          ->check(CLI::PositiveNumber)
          ->capture_default_str();
      app.add_option("--batch", o->batch, "global batch")->check(CLI::PositiveNumber)->capture_default_str();
      app.add_option("--threads", o->threads, "torch intra-op threads")
          ->check(CLI::PositiveNumber)
          ->capture_default_str();
      app.add_flag("--ranks", o->ranks, "data-parallel across processes: run under mpirun -np N (MPI communicator)");
      return [o]() -> int { return run_torch_demo(*o); };
    }};

}  // namespace
