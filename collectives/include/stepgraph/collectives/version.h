// stepgraph/collectives — communicators (NCCL, MPI, in-process) and gradient
// bucketing. Thin for now: the executor's collectives hook is declared in
// runtime (see stepgraph/runtime/collectives_hook.h once it lands).
#pragma once
namespace stepgraph::collectives {
/// Name of the module, for `stepgraph info`.
[[nodiscard]] const char* module_name() noexcept;
}  // namespace stepgraph::collectives
