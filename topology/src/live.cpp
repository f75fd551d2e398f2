#include <stepgraph/topology/live.h>

#include <hwloc.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

namespace stepgraph::topology {

std::string CpuSet::to_string() const {
  std::string out;
  for (std::size_t i = 0; i < pus.size();) {
    std::size_t j = i;
    while (j + 1 < pus.size() && pus[j + 1] == pus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(pus[i]);
    if (j > i) out += "-" + std::to_string(pus[j]);
    i = j + 1;
  }
  return out;
}

struct LiveMachine::Impl {
  hwloc_topology_t topo = nullptr;
};

namespace {
CpuSet from_bitmap(hwloc_const_bitmap_t bm) {
  CpuSet s;
  int i = -1;
  while ((i = hwloc_bitmap_next(bm, i)) != -1) s.pus.push_back(i);
  return s;
}

// RAII for an hwloc bitmap.
struct Bitmap {
  hwloc_bitmap_t bm = hwloc_bitmap_alloc();
  Bitmap() = default;
  explicit Bitmap(const CpuSet& s) {
    for (int pu : s.pus) hwloc_bitmap_set(bm, static_cast<unsigned>(pu));
  }
  Bitmap(const Bitmap&) = delete;
  Bitmap& operator=(const Bitmap&) = delete;
  ~Bitmap() { hwloc_bitmap_free(bm); }
};
}  // namespace

LiveMachine::LiveMachine() : impl_(new Impl) {
  if (hwloc_topology_init(&impl_->topo) != 0) throw HwlocError("hwloc_topology_init failed");
  if (hwloc_topology_load(impl_->topo) != 0) {
    hwloc_topology_destroy(impl_->topo);
    throw HwlocError(fmt::format("hwloc_topology_load failed: {}", std::strerror(errno)));
  }
  pu_count_ = hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_PU);
  core_count_ = hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_CORE);
  package_count_ = hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_PACKAGE);
  const int n = hwloc_get_nbobjs_by_type(impl_->topo, HWLOC_OBJ_NUMANODE);
  for (int i = 0; i < n; ++i) {
    hwloc_obj_t obj = hwloc_get_obj_by_type(impl_->topo, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
    NumaNodeInfo info;
    info.os_index = static_cast<int>(obj->os_index);
    info.memory_bytes = obj->attr ? obj->attr->numanode.local_memory : 0;
    info.cpus = from_bitmap(obj->cpuset);
    numa_.push_back(std::move(info));
  }
  STEPGRAPH_DEBUG(kTopology, "live machine: {} packages, {} cores, {} PUs, {} NUMA nodes", package_count_, core_count_,
                  pu_count_, numa_.size());
}

LiveMachine::~LiveMachine() {
  hwloc_topology_destroy(impl_->topo);
  delete impl_;
}

const LiveMachine& LiveMachine::get() {
  static const LiveMachine machine;
  return machine;
}

const NumaNodeInfo& LiveMachine::numa_node(int os_index) const {
  for (const auto& n : numa_)
    if (n.os_index == os_index) return n;
  throw InvalidArgument(
      fmt::format("NUMA node {} does not exist on this machine ({} node(s)); "
                  "use one `stepgraph info` lists",
                  os_index, numa_.size()));
}

void LiveMachine::bind(const CpuSet& cpus, BindScope scope) const {
  STEPGRAPH_CHECK(!cpus.empty(), InvalidArgument, "LiveMachine::bind: the cpuset is empty; give at least one PU");
  Bitmap bm(cpus);
  const int flags = scope == BindScope::kThread ? HWLOC_CPUBIND_THREAD : HWLOC_CPUBIND_PROCESS;
  if (hwloc_set_cpubind(impl_->topo, bm.bm, flags) != 0)
    throw HwlocError(fmt::format("binding to cpus {} failed: {}", cpus.to_string(), std::strerror(errno)));
}

CpuSet LiveMachine::current_binding() const {
  Bitmap bm;
  if (hwloc_get_cpubind(impl_->topo, bm.bm, HWLOC_CPUBIND_THREAD) != 0)
    throw HwlocError(fmt::format("hwloc_get_cpubind failed: {}", std::strerror(errno)));
  return from_bitmap(bm.bm);
}

void* LiveMachine::allocate_on_node(std::size_t bytes, int os_index) const {
  STEPGRAPH_CHECK(bytes > 0, InvalidArgument, "allocate_on_node: zero bytes requested on NUMA node {}", os_index);
  (void)numa_node(os_index);  // validates
  hwloc_obj_t node = hwloc_get_numanode_obj_by_os_index(impl_->topo, static_cast<unsigned>(os_index));
  void* p = hwloc_alloc_membind(impl_->topo, bytes, node->nodeset, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET);
  if (p == nullptr) {
    STEPGRAPH_WARN(kMemory, "hwloc could not bind {} bytes to NUMA node {} ({}); using first-touch memory", bytes,
                   os_index, std::strerror(errno));
    p = hwloc_alloc(impl_->topo, bytes);
  }
  if (p == nullptr)
    throw HwlocError(fmt::format("out of host memory allocating {} bytes on NUMA node {}", bytes, os_index));
  return p;
}

void LiveMachine::free_on_node(void* ptr, std::size_t bytes) const noexcept {
  if (ptr != nullptr) hwloc_free(impl_->topo, ptr, bytes);
}

int LiveMachine::numa_node_of(const void* ptr) const {
  Bitmap set;
  if (hwloc_get_area_memlocation(impl_->topo, ptr, 1, set.bm, HWLOC_MEMBIND_BYNODESET) != 0) return -1;
  const int first = hwloc_bitmap_first(set.bm);
  return first;
}

}  // namespace stepgraph::topology
