// The data-parallel executor (Note [Data-parallel replicas]).
#include <stepgraph/collectives/data_parallel.h>

#include <exception>
#include <thread>

#include <stepgraph/collectives/in_process.h>
#include <stepgraph/core/log.h>

namespace stepgraph::collectives {

using runtime::ReplayStatus;

ReplayStatus DataParallelReplay::wait() const {
  ReplayStatus worst = ReplayStatus::kDone;
  for (const auto& h : handles_) {
    const ReplayStatus s = h.wait();
    if (s != ReplayStatus::kDone && worst == ReplayStatus::kDone) worst = s;
  }
  return worst;
}

std::optional<runtime::StepError> DataParallelReplay::error() const {
  for (const auto& h : handles_)
    if (auto e = h.error()) return e;
  return std::nullopt;
}

void DataParallelReplay::release() const {
  for (const auto& h : handles_) h.release();
}

DataParallelExecutor::DataParallelExecutor(runtime::StepSpec replica_spec, runtime::StepFunction step,
                                           DataParallelOptions options) {
  const auto n = options.devices.size();
  STEPGRAPH_CHECK(n >= 1, InvalidArgument, "DataParallelExecutor: no devices given");
  backend_ = options.executor.backend_instance;
  if (!backend_) {
    int max_device = 0;
    for (int d : options.devices) max_device = std::max(max_device, d);
    auto bo = options.executor.backend_options;
    bo.host_devices = std::max(bo.host_devices, max_device + 1);
    backend_ = runtime::Backend::create(options.executor.backend, bo);
  }
  if (!options.communicators.empty()) {
    STEPGRAPH_CHECK(options.communicators.size() == n, InvalidArgument,
                    "DataParallelExecutor: {} communicators given for {} devices; give one per device",
                    options.communicators.size(), n);
    comms_ = options.communicators;
    for (std::size_t r = 0; r < n; ++r)
      STEPGRAPH_CHECK(comms_[r] && comms_[r]->rank() == static_cast<int>(r) &&
                          comms_[r]->device() == options.devices[r] && comms_[r]->world_size() == static_cast<int>(n),
                      InvalidArgument, "DataParallelExecutor: communicator {} must be rank {} of {} on device {}", r, r,
                      n, options.devices[r]);
  } else {
    STEPGRAPH_CHECK(backend_->kind() == runtime::BackendKind::kHost, InvalidArgument,
                    "DataParallelExecutor on the {} backend: give DataParallelOptions::communicators (an NCCL group, "
                    "collectives/nccl.h)",
                    backend_->name());
    comms_ = make_in_process_group(backend_, options.devices, options.communicator);
  }
  if (backend_->kind() == runtime::BackendKind::kCuda && n > 1)
    STEPGRAPH_WARN(kExecutor,
                   "data-parallel capture with {} GPUs in one process: supported, but one GPU per process is the "
                   "recommended layout for captured NCCL collectives (DESIGN 1.5)",
                   n);
  for (std::size_t r = 0; r < n; ++r) {
    runtime::ExecutorOptions eo = options.executor;
    eo.backend_instance = backend_;
    eo.device = options.devices[r];
    eo.collectives = comms_[r];
    executors_.push_back(std::make_unique<runtime::StepExecutor>(replica_spec, step, std::move(eo)));
  }
}

DataParallelExecutor::~DataParallelExecutor() {
  try {
    close();
  } catch (const std::exception& e) {
    STEPGRAPH_WARN(kExecutor, "DataParallelExecutor: close() failed in the destructor: {}", e.what());
  }
}

runtime::StepExecutor& DataParallelExecutor::replica(int r) const {
  STEPGRAPH_CHECK(r >= 0 && r < replicas(), InvalidArgument, "DataParallelExecutor: replica {} of {} does not exist", r,
                  replicas());
  return *executors_[static_cast<std::size_t>(r)];
}

Communicator& DataParallelExecutor::communicator(int r) const {
  (void)replica(r);
  return *comms_[static_cast<std::size_t>(r)];
}

void DataParallelExecutor::prepare(std::uint64_t shape_key) {
  std::vector<std::exception_ptr> errors(executors_.size());
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < executors_.size(); ++r)
    threads.emplace_back([&, r] {
      try {
        executors_[r]->prepare(shape_key);
      } catch (...) {
        errors[r] = std::current_exception();
        // The peers' warm-up collectives would wait for this replica.
        comms_[r]->abort(fmt::format("replica {} failed to prepare", r));
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

std::vector<runtime::InputSlot> DataParallelExecutor::acquire_inputs() {
  std::vector<runtime::InputSlot> slots;
  for (auto& e : executors_) slots.push_back(e->acquire_inputs());
  return slots;
}

DataParallelReplay DataParallelExecutor::replay(std::vector<runtime::InputSlot> slots, std::uint64_t shape_key) {
  STEPGRAPH_CHECK(slots.size() == executors_.size(), InvalidArgument,
                  "DataParallelExecutor::replay: {} slots given for {} replicas; give one per replica", slots.size(),
                  executors_.size());
  DataParallelReplay out;
  for (std::size_t r = 0; r < executors_.size(); ++r)
    out.handles_.push_back(executors_[r]->replay(std::move(slots[r]), shape_key));
  return out;
}

void DataParallelExecutor::synchronize() {
  for (auto& e : executors_) e->synchronize();
}

void DataParallelExecutor::set_learning_rate(float lr) {
  for (auto& e : executors_) e->set_learning_rate(lr);
}

void DataParallelExecutor::write_state(std::string_view name, const void* data, std::size_t bytes) {
  for (auto& e : executors_) e->write_state(name, data, bytes);
}

void DataParallelExecutor::read_state(int r, std::string_view name, void* data, std::size_t bytes) {
  replica(r).read_state(name, data, bytes);
}

std::optional<runtime::StepError> DataParallelExecutor::failure() const {
  for (const auto& e : executors_)
    if (auto f = e->failure()) return f;
  return std::nullopt;
}

void DataParallelExecutor::close() {
  // A replica's replay in flight may wait in a collective for a peer's
  // replay that close() would cancel: let every replica finish first, or,
  // after a failure, abort the communicators so nothing waits.
  if (!failure()) {
    try {
      synchronize();
    } catch (const std::exception& e) {
      STEPGRAPH_WARN(kExecutor, "DataParallelExecutor::close: {}", e.what());
    }
  }
  if (failure())
    for (auto& c : comms_) c->abort("the data-parallel executor closes after a replica failed");
  for (auto& e : executors_) e->close();
}

}  // namespace stepgraph::collectives
