// Launch detection from the launcher's environment (Note [Launch detection
// without MPI]).
#include <stepgraph/collectives/launch.h>

#include <charconv>
#include <cstdlib>
#include <optional>
#include <string_view>

#include <stepgraph/core/error.h>

namespace stepgraph::collectives {
namespace {

/// The variable's value as a non-negative int; nullopt if unset. A value
/// that is set but not a plain non-negative decimal integer (empty, a sign,
/// trailing text, out of int's range) is InvalidArgument.
std::optional<int> env_int(const char* name) {
  const char* raw = std::getenv(name);
  if (raw == nullptr) return std::nullopt;
  const std::string_view v(raw);
  int out = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  STEPGRAPH_CHECK(!v.empty() && ec == std::errc() && end == v.data() + v.size() && out >= 0, InvalidArgument,
                  "launch detection: environment variable {}='{}' is not a non-negative integer; fix or unset it "
                  "(it is read as this process's place in the job)",
                  name, v);
  return out;
}

/// A required companion of a rank variable that was found.
int env_required(const char* name, const char* because) {
  const auto v = env_int(name);
  STEPGRAPH_CHECK(v.has_value(), InvalidArgument,
                  "launch detection: {} is set but {} is not; the launcher's environment is incomplete", because, name);
  return *v;
}

/// Slurm's tasks per node ("4", "4(x2)", "2,1"): the first count, if any.
std::optional<int> slurm_tasks_per_node() {
  for (const char* name : {"SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}) {
    const char* raw = std::getenv(name);
    if (raw == nullptr) continue;
    const std::string_view v(raw);
    int out = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec == std::errc() && end != v.data() && out > 0) return out;
  }
  return std::nullopt;
}

void validate(const LaunchInfo& info, const char* rank_var, const char* size_var) {
  STEPGRAPH_CHECK(info.size >= 1, InvalidArgument, "launch detection: {}={} is not a job size (at least 1)", size_var,
                  info.size);
  STEPGRAPH_CHECK(info.rank < info.size, InvalidArgument,
                  "launch detection: {}={} is not below {}={}; the launcher's environment is inconsistent", rank_var,
                  info.rank, size_var, info.size);
  STEPGRAPH_CHECK(info.local_rank < info.local_size, InvalidArgument,
                  "launch detection ({}): local rank {} is not below the local size {}", info.source, info.local_rank,
                  info.local_size);
}

}  // namespace

LaunchInfo detect_launch() {
  LaunchInfo info;
  if (const auto rank = env_int("OMPI_COMM_WORLD_RANK")) {
    info.source = "openmpi";
    info.rank = *rank;
    info.size = env_required("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK");
    info.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK").value_or(info.rank);
    info.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE").value_or(info.size);
    validate(info, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE");
    return info;
  }
  if (const auto rank = env_int("SLURM_PROCID")) {
    info.source = "slurm";
    info.rank = *rank;
    info.size = env_required("SLURM_NTASKS", "SLURM_PROCID");
    info.local_rank = env_int("SLURM_LOCALID").value_or(0);
    info.local_size = slurm_tasks_per_node().value_or(info.local_rank + 1);
    if (info.local_size <= info.local_rank) info.local_size = info.local_rank + 1;
    validate(info, "SLURM_PROCID", "SLURM_NTASKS");
    return info;
  }
  if (const auto rank = env_int("PMI_RANK")) {
    info.source = "pmi";
    info.rank = *rank;
    info.size = env_required("PMI_SIZE", "PMI_RANK");
    info.local_rank = info.rank;
    info.local_size = info.size;
    validate(info, "PMI_RANK", "PMI_SIZE");
    return info;
  }
  info.source = "none";
  return info;
}

}  // namespace stepgraph::collectives
