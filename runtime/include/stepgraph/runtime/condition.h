// stepgraph/runtime/condition.h — the condition of a conditional node (IF,
// WHILE) as a kernel receives it. Kept C++17 and dependency-free: CUDA
// kernels include it (device side: condition_device.h).
//
// Note [Conditional nodes]
// A conditional node runs its body graph if (IF) or while (WHILE) its
// condition is non-zero, and the condition is set on the device by a kernel
// that ran before the node (or, for WHILE, by the body itself): no host
// round trip decides it (CUDA Programming Guide, "CUDA Graphs" >
// "Conditional Graph Nodes"). StreamRef::create_condition makes a condition
// in the capture in progress; a kernel receives the ConditionHandle by value
// and calls set_condition (host kernels) or device_set_condition (device
// kernels, condition_device.h); StreamRef::capture_if / capture_while
// capture the body. The value is reset to its default at every launch of the
// executable graph (cudaGraphCondAssignDefault).
//
// Ownership: a handle is a plain value naming a condition of one graph (and
// of every executable made from it). Thread-safety: a value. Capture: the
// handle is made during capture and used by the graph's kernels at run time.
#pragma once

namespace stepgraph::runtime {

/// The condition of a conditional node, passed to kernels by value
/// (cudaGraphConditionalHandle on the cuda backend).
struct ConditionHandle {
  unsigned long long value = 0;
};

/// Host kernels only: sets `handle` to `value` for the graph launch whose
/// node is running on the calling thread (the host backend's twin of
/// cudaGraphSetConditional). Throws InvalidState, which faults the node, when
/// the calling kernel is not a node of a graph holding that condition.
void set_condition(ConditionHandle handle, unsigned value);

}  // namespace stepgraph::runtime
