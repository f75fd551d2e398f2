// Temporary: lets dependents link while the implementation lands.
#include <stepgraph/topology/binding.h>
#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/core/error.h>

namespace stepgraph::topology {
namespace { [[noreturn]] void todo(const char* f) { throw InvalidState(fmt::format("{}: not implemented yet", f)); } }
Topology Topology::discover() { todo("Topology::discover"); }
const Topology& Topology::live() { todo("Topology::live"); }
Topology Topology::load(const std::filesystem::path&) { todo("Topology::load"); }
Topology Topology::parse(const std::string&, const std::string&) { todo("Topology::parse"); }
Topology Topology::from_env_or_live() { todo("Topology::from_env_or_live"); }
double Topology::numa_distance(std::size_t, std::size_t) const { todo("numa_distance"); }
std::string Topology::to_json() const { todo("to_json"); }
std::string Topology::to_nccl_xml() const { todo("to_nccl_xml"); }
void Topology::dump(const std::filesystem::path&) const { todo("dump"); }
std::string_view to_string(PathKind) { todo("to_string"); }
std::string_view to_string(EndpointKind) { todo("to_string"); }
std::string Path::label() const { todo("label"); }
CostMatrix CostMatrix::build(const Topology&) { todo("build"); }
std::vector<std::size_t> CostMatrix::indices(EndpointKind) const { todo("indices"); }
std::size_t CostMatrix::position(EndpointKind, int) const { todo("position"); }
const Path& CostMatrix::path(std::size_t, std::size_t) const { todo("path"); }
double CostMatrix::numa_distance(std::size_t, std::size_t) const { todo("numa_distance"); }
std::string CostMatrix::to_nvidia_smi() const { todo("x"); }
std::string CostMatrix::bandwidth_table() const { todo("x"); }
std::string CostMatrix::latency_table() const { todo("x"); }
std::string CostMatrix::numa_table() const { todo("x"); }
std::string CostMatrix::to_json() const { todo("x"); }
Locality gpu_locality(const Topology&, int) { todo("x"); }
Locality nic_locality(const Topology&, int) { todo("x"); }
CpuSet bind_thread_near_gpu(int) { todo("x"); }
CpuSet bind_thread_near_nic(int) { todo("x"); }
void* allocate_on_numa(std::size_t, int) { todo("x"); }
void* allocate_near_gpu(std::size_t, int) { todo("x"); }
void free_host(void*, std::size_t) noexcept {}
}
