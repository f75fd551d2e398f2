// MetricsServer over Debian's cpp-httplib (libcpp-httplib-dev: the header
// declares, libcpp-httplib.so defines; compiled with the flags of its
// pkg-config file, which change the classes' layout).
//
// Note [Stopping the metrics server]
// httplib's Server::stop() only closes the listening socket if the accept
// loop is already running (is_running()), so stopping right after start
// would leave listen_after_bind() waiting forever: the destructor waits for
// the loop to run (or to have failed) first. Connections are closed after
// every response (keep-alive off) and the request pool has one thread; a
// connection that sends nothing holds that thread for the keep-alive timeout
// (1 s), which bounds how long the destructor can wait for it.
#include <stepgraph/runtime/metrics.h>

#include <condition_variable>
#include <thread>

#include <sys/socket.h>

#include <httplib.h>

#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

namespace stepgraph::runtime {

struct MetricsServer::Impl {
  std::shared_ptr<const MetricsRegistry> registry;
  std::string address;
  int port = 0;
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> loop_ended{false};
  mutable std::mutex mutex;
  mutable std::condition_variable cv;
  std::uint64_t scrapes = 0;
};

MetricsServer::MetricsServer(std::shared_ptr<const MetricsRegistry> registry, MetricsServerOptions options)
    : impl_(std::make_unique<Impl>()) {
  STEPGRAPH_CHECK(registry != nullptr, InvalidArgument, "MetricsServer: the registry is null");
  STEPGRAPH_CHECK(options.port >= 0 && options.port <= 65535, InvalidArgument,
                  "MetricsServer: port {} is out of range; give 0 (an ephemeral port) to 65535", options.port);
  auto& i = *impl_;
  i.registry = std::move(registry);
  i.address = options.address;
  i.server.new_task_queue = [] { return new httplib::ThreadPool(1); };
  i.server.set_keep_alive_max_count(1);
  i.server.set_keep_alive_timeout(1);  // an idle connection holds the worker (and close()) at most 1 s
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, with which a
  // second server binds a port in use and silently shares it.
  i.server.set_socket_options([](socket_t sock) {
    int yes = 1;
    (void)::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  i.server.set_read_timeout(2, 0);
  i.server.set_write_timeout(2, 0);
  Impl* self = &i;
  i.server.Get("/metrics", [self](const httplib::Request&, httplib::Response& res) {
    res.set_content(self->registry->render(), std::string(MetricsRegistry::kContentType).c_str());
    {
      std::lock_guard lock(self->mutex);
      ++self->scrapes;
    }
    self->cv.notify_all();
  });
  if (options.port == 0) {
    i.port = i.server.bind_to_any_port(options.address);
  } else {
    i.port = i.server.bind_to_port(options.address, options.port) ? options.port : -1;
  }
  STEPGRAPH_CHECK(i.port > 0, InvalidArgument,
                  "MetricsServer: cannot listen on {}:{} (in use, or not an address of this machine); give another "
                  "port, or 0 for an ephemeral one",
                  options.address, options.port);
  i.thread = std::thread([self] {
    self->server.listen_after_bind();
    self->loop_ended.store(true);
  });
  STEPGRAPH_INFO(kRuntime, "metrics: serving http://{}:{}/metrics", i.address, i.port);
}

MetricsServer::~MetricsServer() {
  auto& i = *impl_;
  // Note [Stopping the metrics server]
  while (!i.server.is_running() && !i.loop_ended.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  i.server.stop();
  if (i.thread.joinable()) i.thread.join();
}

int MetricsServer::port() const noexcept {
  return impl_->port;
}
const std::string& MetricsServer::address() const noexcept {
  return impl_->address;
}
std::uint64_t MetricsServer::scrapes() const noexcept {
  std::lock_guard lock(impl_->mutex);
  return impl_->scrapes;
}
bool MetricsServer::wait_for_scrapes(std::uint64_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  return impl_->cv.wait_for(lock, timeout, [&] { return impl_->scrapes >= n; });
}

}  // namespace stepgraph::runtime
