// MetricsServer in a build without cpp-httplib: the registry works, serving
// it does not.
#include <stepgraph/runtime/metrics.h>

#include <stepgraph/core/error.h>

namespace stepgraph::runtime {

struct MetricsServer::Impl {
  std::string address;
};

MetricsServer::MetricsServer(std::shared_ptr<const MetricsRegistry>, MetricsServerOptions) {
  throw InvalidState(
      "MetricsServer: this build has no HTTP server (cpp-httplib was not found at configure time; install "
      "libcpp-httplib-dev and reconfigure); MetricsRegistry::render() still gives the text to serve yourself");
}
MetricsServer::~MetricsServer() = default;
int MetricsServer::port() const noexcept {
  return -1;
}
const std::string& MetricsServer::address() const noexcept {
  return impl_->address;
}
std::uint64_t MetricsServer::scrapes() const noexcept {
  return 0;
}
bool MetricsServer::wait_for_scrapes(std::uint64_t, std::chrono::milliseconds) const {
  return false;
}

}  // namespace stepgraph::runtime
