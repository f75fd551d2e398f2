// The release thread of Note [Deferred release] (deferred_release.h).
#include "deferred_release.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <stepgraph/core/log.h>

namespace stepgraph::runtime::detail {
namespace {

struct Pending {
  std::shared_ptr<void> object;
  std::function<bool()> done;
};

class Releaser {
 public:
  /// Made on first use and never destroyed, with a detached thread: a CUDA
  /// callback or a static destructor may hand an object over at any time,
  /// also while the process exits, so there is no moment at which the
  /// releaser could safely be torn down.
  static Releaser& get() {
    static Releaser* releaser = new Releaser;  // deliberately never deleted (see above)
    return *releaser;
  }

  void post(Pending p) {
    {
      std::lock_guard lock(mutex_);
      incoming_.push_back(std::move(p));
    }
    cv_.notify_one();
  }

 private:
  Releaser() {
    std::thread([this] { run(); }).detach();
  }

  static bool is_done(const Pending& p) noexcept {
    if (!p.done) return true;
    try {
      return p.done();
    } catch (const std::exception& ex) {
      STEPGRAPH_DEBUG(kRuntime, "deferred release: the completion probe threw ({}); releasing", ex.what());
      return true;
    } catch (...) {
      return true;
    }
  }

  void run() {
    std::vector<Pending> pending;
    auto backoff = std::chrono::milliseconds(1);
    std::unique_lock lock(mutex_);
    for (;;) {
      if (pending.empty()) {
        cv_.wait(lock, [&] { return !incoming_.empty(); });
      } else {
        cv_.wait_for(lock, backoff, [&] { return !incoming_.empty(); });
      }
      if (!incoming_.empty()) backoff = std::chrono::milliseconds(1);
      for (auto& p : incoming_) pending.push_back(std::move(p));
      incoming_.clear();
      lock.unlock();
      // Destroy outside the lock: a destructor may hand over more objects
      // (an executor's remains hold executables that defer their buffers).
      std::vector<Pending> keep;
      for (auto& p : pending) {
        if (is_done(p)) {
          p = Pending{};  // destroys the object here, on the release thread
        } else {
          keep.push_back(std::move(p));
        }
      }
      pending.swap(keep);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(100));
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Pending> incoming_;
};

}  // namespace

void release_when(std::shared_ptr<void> object, std::function<bool()> done) {
  Releaser::get().post(Pending{std::move(object), std::move(done)});
}

}  // namespace stepgraph::runtime::detail
