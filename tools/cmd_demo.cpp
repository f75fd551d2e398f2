// `stepgraph demo`: the main job. Trains the demo MLP twice from one seed,
// eagerly and by graph replay, and compares the parameters bit for bit
// (tools/demo/include/stepgraph/demo/mlp.h).
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include <stepgraph/demo/mlp.h>
#include <stepgraph/runtime/backend.h>

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
};

int run_demo_command(const DemoCliOptions& cli) {
  demo::DemoOptions o;
  o.backend = cli.backend;
  o.steps = cli.steps;
  o.warmup = cli.warmup;
  o.seed = cli.seed;
  o.shape.batch = cli.batch;
  o.learning_rate = cli.learning_rate;
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
  if (!r.identical()) {
    std::printf("MISMATCH: replayed training differs from eager training\n");
    return 1;
  }
  std::printf("OK: replayed training is bit-identical to eager training\n");
  return 0;
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
      return [o]() -> int { return run_demo_command(*o); };
    }};

}  // namespace
