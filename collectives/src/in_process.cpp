// The in-process communicator (Note [In-process collectives]).
#include <stepgraph/collectives/in_process.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <thread>

#include <stepgraph/core/log.h>

#include "reduce.h"

namespace stepgraph::collectives {
namespace {

enum class Failure { kNone, kMismatch, kTimeout, kAborted };

struct Posted {
  CollectiveSignature signature;
  std::byte* send = nullptr;
  std::byte* recv = nullptr;
};

struct Round {
  std::vector<std::optional<Posted>> posted;
  int arrived = 0;
  int finished = 0;
  int left = 0;
};

struct Job {
  Posted call;
  std::function<void()> done;
};

/// What the ranks share. Held by the communicators, by every collective in
/// a stream or graph (its start function), and by the rank threads.
struct GroupState {
  int world = 0;
  CommunicatorOptions options;
  std::uint64_t group_id = 0;  // the first rank's communicator id (messages)

  std::mutex mutex;  // rounds, failure
  std::condition_variable cv;
  std::map<std::uint64_t, Round> rounds;
  Failure failure = Failure::kNone;
  std::string message;
  std::atomic<bool> failed{false};

  struct RankQueue {
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<Job> jobs;
    bool stop = false;
    std::uint64_t next_seq = 0;  // touched by the rank's thread only
  };
  std::vector<std::unique_ptr<RankQueue>> queues;

  /// First failure wins; wakes every waiting rank. Call with `mutex` held.
  void fail_locked(Failure f, std::string why, bool quiet = false) {
    if (failure != Failure::kNone) return;
    failure = f;
    message = std::move(why);
    failed.store(true, std::memory_order_release);
    cv.notify_all();
    if (!quiet) STEPGRAPH_WARN(kRuntime, "in-process communicator group {} failed: {}", group_id, message);
  }
  void fail(Failure f, std::string why, bool quiet = false) {
    std::lock_guard lock(mutex);
    fail_locked(f, std::move(why), quiet);
  }

  void post(int rank, Job job) {
    auto& q = *queues[static_cast<std::size_t>(rank)];
    {
      std::lock_guard lock(q.mutex);
      if (!q.stop) {
        q.jobs.push_back(std::move(job));
        q.cv.notify_one();
        return;
      }
    }
    // The group's threads are gone (every communicator destroyed while a
    // graph still replays): fail instead of waiting for nobody.
    fail(Failure::kAborted, "a collective ran after every communicator of the group was destroyed");
    job.done();
  }

  void rank_loop(int rank) {
    auto& q = *queues[static_cast<std::size_t>(rank)];
    for (;;) {
      Job job;
      {
        std::unique_lock lock(q.mutex);
        q.cv.wait(lock, [&] { return q.stop || !q.jobs.empty(); });
        if (q.jobs.empty()) return;
        job = std::move(q.jobs.front());
        q.jobs.pop_front();
      }
      run(rank, q.next_seq++, job.call);
      auto done = std::move(job.done);
      done();
    }
  }

  /// Waits, with `lock` held, until `ready()` or a failure; a wait past the
  /// timeout fails the group. Returns false on failure.
  template <class Ready>
  bool wait_for_peers(std::unique_lock<std::mutex>& lock, Ready ready, const char* phase, int rank, std::uint64_t seq) {
    const auto deadline = std::chrono::steady_clock::now() + options.timeout;
    while (!ready() && failure == Failure::kNone) {
      if (cv.wait_until(lock, deadline) == std::cv_status::timeout && !ready() && failure == Failure::kNone) {
        const Round& r = rounds[seq];
        std::vector<int> missing;
        for (int k = 0; k < world; ++k)
          if (!r.posted[static_cast<std::size_t>(k)]) missing.push_back(k);
        fail_locked(Failure::kTimeout,
                    fmt::format("CollectiveTimeout: rank {} waited {} ms {} collective #{} ({}) of communicator group "
                                "{}; ranks that never reached it: {}. A peer is missing, stuck, or issued fewer "
                                "collectives",
                                rank, options.timeout.count(), phase, seq,
                                r.posted[static_cast<std::size_t>(rank)]
                                    ? describe(r.posted[static_cast<std::size_t>(rank)]->signature)
                                    : std::string("?"),
                                group_id,
                                missing.empty() ? std::string("none (a peer did not finish)")
                                                : fmt::format("{}", fmt::join(missing, ", "))));
      }
    }
    return failure == Failure::kNone;
  }

  void run(int rank, std::uint64_t seq, const Posted& call) {
    std::vector<Posted> all;
    {
      std::unique_lock lock(mutex);
      if (failure != Failure::kNone) return;  // skipped: the group failed (nothing waits for it)
      Round& r = rounds[seq];
      if (r.posted.empty()) r.posted.resize(static_cast<std::size_t>(world));
      r.posted[static_cast<std::size_t>(rank)] = call;
      if (++r.arrived == world) {
        const Posted& first = *r.posted[0];
        for (int k = 1; k < world; ++k) {
          const Posted& other = *r.posted[static_cast<std::size_t>(k)];
          if (!(other.signature == first.signature)) {
            fail_locked(Failure::kMismatch,
                        fmt::format("CollectiveMismatch at collective #{} of communicator group {}: rank 0 called "
                                    "{}, rank {} called {}. Every rank must issue the same collectives in the same "
                                    "order",
                                    seq, group_id, describe(first.signature), k, describe(other.signature)));
            break;
          }
        }
        cv.notify_all();
      }
      if (!wait_for_peers(
              lock, [&] { return rounds[seq].arrived == world; }, "for its peers to reach", rank, seq))
        return;
      for (auto& p : rounds[seq].posted) all.push_back(*p);
    }
    compute(rank, all);
    std::unique_lock lock(mutex);
    Round& r = rounds[seq];
    if (++r.finished == world) cv.notify_all();
    if (!wait_for_peers(
            lock, [&] { return rounds[seq].finished == world; }, "for its peers to finish", rank, seq))
      return;
    if (++rounds[seq].left == world) rounds.erase(seq);
  }

  /// This rank's share of the work (Note [In-process collectives]).
  void compute(int rank, const std::vector<Posted>& all) const {
    const CollectiveSignature& s = all[0].signature;
    const std::size_t es = runtime::dtype_size(s.dtype);
    const auto n = static_cast<std::size_t>(world);
    const auto r = static_cast<std::size_t>(rank);
    std::vector<const std::byte*> src(n);
    std::vector<std::byte*> dst(n);
    switch (s.kind) {
      case CollectiveKind::kAllReduce: {
        const std::size_t begin = s.count * r / n, end = s.count * (r + 1) / n;
        for (std::size_t k = 0; k < n; ++k) {
          src[k] = all[k].send + begin * es;
          dst[k] = all[k].recv + begin * es;
        }
        detail::reduce(s.dtype, s.reduce, src, dst, end - begin, world);
        break;
      }
      case CollectiveKind::kReduceScatter: {
        for (std::size_t k = 0; k < n; ++k) src[k] = all[k].send + r * s.count * es;
        std::byte* out = all[r].recv;
        detail::reduce(s.dtype, s.reduce, src, std::span<std::byte* const>(&out, 1), s.count, world);
        break;
      }
      case CollectiveKind::kBroadcast: {
        const std::size_t begin = s.count * r / n, end = s.count * (r + 1) / n;
        const std::byte* from = all[static_cast<std::size_t>(s.root)].send + begin * es;
        for (std::size_t k = 0; k < n; ++k)
          if (k != static_cast<std::size_t>(s.root)) std::memcpy(all[k].recv + begin * es, from, (end - begin) * es);
        break;
      }
      case CollectiveKind::kAllGather: {
        const std::size_t bytes = s.count * es;
        for (std::size_t k = 0; k < n; ++k) {
          std::byte* to = all[k].recv + r * bytes;
          if (to != all[r].send) std::memcpy(to, all[r].send, bytes);
        }
        break;
      }
    }
  }
};

/// Owns the rank threads; shared by the communicators only, so that the
/// threads stop when the last communicator goes (not when the last graph
/// holding a collective does).
struct GroupThreads {
  std::shared_ptr<GroupState> state;
  std::vector<std::thread> threads;
  ~GroupThreads() {
    state->fail(Failure::kAborted, "every communicator of the group was destroyed", /*quiet=*/true);
    for (auto& q : state->queues) {
      std::lock_guard lock(q->mutex);
      q->stop = true;
      q->cv.notify_all();
    }
    for (auto& t : threads) t.join();
  }
};

class InProcessCommunicator final : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<runtime::Backend> backend, int device, int rank, int world,
                        CommunicatorOptions options, std::shared_ptr<GroupThreads> threads)
      : Communicator(std::move(backend), device, rank, world, options), threads_(std::move(threads)) {}

 protected:
  void implement(const Call& call, runtime::CollectiveCall& out) override {
    out.host_start = [state = threads_->state, rank = rank_,
                      posted = Posted{call.signature, call.send, call.recv}](std::function<void()> done) {
      state->post(rank, Job{posted, std::move(done)});
    };
  }
  std::optional<std::string> impl_error() override {
    auto& s = *threads_->state;
    if (!s.failed.load(std::memory_order_acquire)) return std::nullopt;
    std::lock_guard lock(s.mutex);
    return s.message;
  }
  [[noreturn]] void throw_impl_error(const std::string& message) override {
    Failure f;
    {
      std::lock_guard lock(threads_->state->mutex);
      f = threads_->state->failure;
    }
    switch (f) {
      case Failure::kMismatch:
        throw CollectiveMismatch(message);
      case Failure::kTimeout:
        throw CollectiveTimeout(message);
      default:
        throw CommunicatorAborted(message);
    }
  }
  void impl_abort(const std::string& reason) override {
    threads_->state->fail(Failure::kAborted,
                          fmt::format("CommunicatorAborted: rank {} aborted communicator group {}: {}", rank_,
                                      threads_->state->group_id, reason));
  }
  bool impl_aborted() const override { return threads_->state->failed.load(std::memory_order_acquire); }
  std::string_view impl_name() const override { return "in-process"; }

 private:
  std::shared_ptr<GroupThreads> threads_;
};

}  // namespace

std::vector<std::shared_ptr<Communicator>> make_in_process_group(std::shared_ptr<runtime::Backend> backend,
                                                                 const std::vector<int>& devices,
                                                                 CommunicatorOptions options) {
  STEPGRAPH_CHECK(backend != nullptr, InvalidArgument, "make_in_process_group: no backend given");
  STEPGRAPH_CHECK(backend->kind() == runtime::BackendKind::kHost, InvalidArgument,
                  "make_in_process_group: the {} backend's devices do not share host memory; use the NCCL "
                  "communicator (collectives/nccl.h) on cuda",
                  backend->name());
  STEPGRAPH_CHECK(!devices.empty(), InvalidArgument, "make_in_process_group: no devices given");
  std::set<int> seen;
  for (int d : devices) {
    STEPGRAPH_CHECK(d >= 0 && d < backend->device_count(), InvalidArgument,
                    "make_in_process_group: device {} does not exist (the backend has {} devices)", d,
                    backend->device_count());
    STEPGRAPH_CHECK(seen.insert(d).second, InvalidArgument,
                    "make_in_process_group: device {} is given twice; one rank per device", d);
  }
  auto state = std::make_shared<GroupState>();
  state->world = static_cast<int>(devices.size());
  state->options = options;
  for (std::size_t i = 0; i < devices.size(); ++i) state->queues.push_back(std::make_unique<GroupState::RankQueue>());
  auto threads = std::make_shared<GroupThreads>();
  threads->state = state;
  std::vector<std::shared_ptr<Communicator>> out;
  for (std::size_t i = 0; i < devices.size(); ++i)
    out.push_back(std::make_shared<InProcessCommunicator>(backend, devices[i], static_cast<int>(i), state->world,
                                                          options, threads));
  state->group_id = out[0]->id();
  for (int r = 0; r < state->world; ++r) threads->threads.emplace_back([state, r] { state->rank_loop(r); });
  return out;
}

}  // namespace stepgraph::collectives
