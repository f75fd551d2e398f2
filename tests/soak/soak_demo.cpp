// soak_demo: the demo step (tools/demo's MLP, built the way `stepgraph demo`
// builds it) replayed N times with 2 slots and pipelined completion
// callbacks, checking that nothing accumulates (issue 19, item 3).
//
//   soak_demo [replays] [backend]     (defaults: 10000, auto)
//
// The main thread keeps both slots busy: acquire_inputs() (blocks while both
// are in flight), fill the batch, replay(), on_complete(); the callback, on
// the executor's thread, checks the status, reads the loss and releases the
// handle (which frees the slot for the main thread). After the first
// replays/10 replays and at the end it synchronizes and samples:
//   - resident memory, /proc/self/statm (pages resident * page size);
//   - open file descriptors, the entries of /proc/self/fd;
//   - threads, the entries of /proc/self/task.
// Pass: every replay done with no error reported; RSS at the end within 1%
// of the first sample (not enforced under AddressSanitizer/ThreadSanitizer,
// whose quarantine and shadow memory grow by design: there LeakSanitizer at
// exit is the memory check); no fd or thread gained; and the final
// parameters and every step's loss bit-identical to an eager run of the same
// steps (demo::train_mlp), so the replays did the real work.
// Exit status 0 on pass, 1 on a failed check, 2 on an error.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include <stepgraph/demo/mlp.h>
#include <stepgraph/runtime/executor.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SG_SOAK_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SG_SOAK_SANITIZED 1
#endif
#endif
#ifndef SG_SOAK_SANITIZED
#define SG_SOAK_SANITIZED 0
#endif

namespace {

namespace rt = stepgraph::runtime;
namespace demo = stepgraph::demo;

struct Sample {
  std::int64_t replays = 0;
  std::size_t rss_bytes = 0;     // resident (statm field 2)
  std::size_t shared_bytes = 0;  // of which file-backed or shared (field 3): code pages among them
  std::size_t fds = 0;
  std::size_t threads = 0;
  double seconds = 0;
};

std::size_t count_entries(const char* dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

Sample sample(std::int64_t replays, std::chrono::steady_clock::time_point t0) {
  Sample s;
  s.replays = replays;
  std::ifstream statm("/proc/self/statm");
  std::size_t size_pages = 0, resident_pages = 0, shared_pages = 0;
  statm >> size_pages >> resident_pages >> shared_pages;
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  s.rss_bytes = resident_pages * page;
  s.shared_bytes = shared_pages * page;
  s.fds = count_entries("/proc/self/fd");  // includes the directory's own fd, in both samples alike
  s.threads = count_entries("/proc/self/task");
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

void print(const Sample& s) {
  std::printf(
      "soak: after %lld replays: rss %.3f MiB (%.3f MiB of it file-backed/shared), %zu fds, %zu threads, %.2f s\n",
      static_cast<long long>(s.replays), static_cast<double>(s.rss_bytes) / (1024.0 * 1024.0),
      static_cast<double>(s.shared_bytes) / (1024.0 * 1024.0), s.fds, s.threads, s.seconds);
}

// What the completion callbacks record (they run on the executor's thread).
// A callback registered after its replay finished is posted to that thread
// rather than run by it at completion, so synchronize() does not wait for
// it: wait_for_callbacks() does, under the mutex that orders the writes.
struct Completions {
  std::mutex m;
  std::condition_variable cv;
  std::int64_t done = 0;
  std::int64_t failed = 0;
  std::int64_t errors_reported = 0;
  std::vector<float> losses;  // one per step
  std::string first_failure;

  void record(std::int64_t step, const rt::ReplayHandle& h) {
    const bool ok = h.status() == rt::ReplayStatus::kDone;
    const float loss = ok ? h.output_span<const float>("loss")[0] : std::nanf("");
    std::lock_guard lock(m);
    losses[static_cast<std::size_t>(step)] = loss;
    if (ok) {
      ++done;
    } else {
      ++failed;
      if (first_failure.empty())
        first_failure = "step " + std::to_string(step) + " ended " + std::string(rt::to_string(h.status()));
    }
    cv.notify_all();
  }
  // True once `count` callbacks have run (bounded: a lost callback fails the soak, never hangs it).
  bool wait_for_callbacks(std::int64_t count) {
    std::unique_lock lock(m);
    return cv.wait_for(lock, std::chrono::seconds(60), [&] { return done + failed >= count; });
  }
};

int run(std::int64_t replays, const std::string& backend) {
  demo::DemoOptions o;  // the demo's defaults: shape, seed, learning rate, warm-ups
  o.backend = backend;
  o.steps = static_cast<int>(replays);
  o.max_in_flight = 2;
  const std::int64_t first_mark = replays / 10;

  Completions c;
  c.losses.assign(static_cast<std::size_t>(replays), std::nanf(""));

  rt::ExecutorOptions eo;
  eo.backend = o.backend;
  eo.device = o.device;
  eo.warmup = o.warmup;
  eo.max_in_flight = o.max_in_flight;
  eo.launch_ahead = o.max_in_flight;
  eo.mode = rt::ExecutionMode::kGraph;
  eo.on_error = [&c](const rt::StepError& e) {
    std::lock_guard lock(c.m);
    ++c.errors_reported;
    if (c.first_failure.empty()) c.first_failure = "error callback: step " + std::to_string(e.step) + ": " + e.message;
  };

  std::vector<float> params(o.shape.param_count());
  Sample first, last;
  const auto t0 = std::chrono::steady_clock::now();
  // Once before the loop: the sampling and printing code's own pages (libc's
  // float formatting among them) are then resident before the first sample.
  print(sample(0, t0));
  {
    rt::StepExecutor executor(demo::mlp_step_spec(o.shape), demo::mlp_step_function(o.shape), eo);
    const auto init = demo::mlp_init_params(o.shape, o.seed);
    executor.write_state("params", init.data(), init.size() * sizeof(float));

    for (std::int64_t step = 0; step < replays; ++step) {
      executor.set_learning_rate(demo::mlp_learning_rate(o.learning_rate, step, o.steps));
      rt::InputSlot slot = executor.acquire_inputs();  // blocks while both slots are in flight
      demo::mlp_make_batch(o.shape, o.seed, step, slot.input_span<float>("x"), slot.input_span<float>("y"));
      const rt::ReplayHandle h = executor.replay(std::move(slot));
      h.on_complete([&c, step](const rt::ReplayHandle& done) {
        c.record(step, done);
        done.release();  // frees the slot for the main thread's next acquire_inputs()
      });
      if (step + 1 == first_mark) {
        executor.synchronize();
        c.wait_for_callbacks(first_mark);
        first = sample(step + 1, t0);
        print(first);
      }
    }
    executor.synchronize();
    c.wait_for_callbacks(replays);
    last = sample(replays, t0);
    print(last);
    executor.read_state("params", params.data(), params.size() * sizeof(float));
    executor.close();
  }

  int failures = 0;
  auto check = [&failures](bool ok, const std::string& what) {
    std::printf("soak: %s: %s\n", ok ? "ok" : "FAILED", what.c_str());
    if (!ok) ++failures;
  };
  {
    std::lock_guard lock(c.m);
    check(c.done == replays && c.failed == 0 && c.errors_reported == 0,
          std::to_string(c.done) + " of " + std::to_string(replays) + " replays done, " + std::to_string(c.failed) +
              " failed, " + std::to_string(c.errors_reported) + " errors reported" +
              (c.first_failure.empty() ? "" : " (" + c.first_failure + ")"));
  }
  const double growth =
      static_cast<double>(last.rss_bytes) / static_cast<double>(first.rss_bytes > 0 ? first.rss_bytes : 1) - 1.0;
  char growth_text[160];
  std::snprintf(growth_text, sizeof growth_text, "rss growth from replay %lld to %lld: %+.3f%% (bound 1%%)%s",
                static_cast<long long>(first.replays), static_cast<long long>(last.replays), 100.0 * growth,
                SG_SOAK_SANITIZED ? " [not enforced under a sanitizer]" : "");
  check(SG_SOAK_SANITIZED || growth <= 0.01, growth_text);
  check(last.fds <= first.fds, "fds: " + std::to_string(first.fds) + " -> " + std::to_string(last.fds));
  check(last.threads <= first.threads,
        "threads: " + std::to_string(first.threads) + " -> " + std::to_string(last.threads));

  // The independent check that the replays computed the steps: the same
  // training run eagerly (the step function launching every step).
  const demo::TrainingRun eager = demo::train_mlp(o, rt::ExecutionMode::kEager);
  check(demo::max_abs_diff(eager.params, params) == 0.0 && demo::max_abs_diff(eager.losses, c.losses) == 0.0,
        "parameters and losses bit-identical to an eager run of the same " + std::to_string(replays) + " steps");
  std::printf("soak: %s: loss %.6f -> %.6f; %s\n", failures == 0 ? "PASS" : "FAIL", c.losses.front(), c.losses.back(),
              SG_SOAK_SANITIZED ? "sanitized build" : "uninstrumented build");
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::int64_t replays = argc > 1 ? std::stoll(argv[1]) : 10000;
    const std::string backend = argc > 2 ? argv[2] : "auto";
    if (replays < 10) {
      std::fprintf(stderr, "soak_demo: replays is %lld; give at least 10 (the first sample is at replays/10)\n",
                   static_cast<long long>(replays));
      return 2;
    }
    return run(replays, backend);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "soak_demo: %s\n", e.what());
    return 2;
  }
}
