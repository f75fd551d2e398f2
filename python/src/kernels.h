// python/src/kernels.h — kernels registered in C++ by name, from which a
// Python program composes a step (Python cannot write device kernels).
//
// Note [Composed steps]
// A Python step is a list of buffers (name, role, shape, dtype) and a list
// of launches, each naming a registered kernel, binding every one of the
// kernel's buffer parameters to a declared buffer and giving its integer
// attributes. stepgraph.Step.launch() resolves and checks a launch at once
// (unknown kernel, missing or unknown parameter, a buffer of the wrong size:
// InvalidArgument naming the kernel, the parameter and the buffer). The step
// function the executor calls at warm-up and capture then enqueues each
// launch through its kernel's `enqueue`; replays never call it (executor.h,
// Note [Host code runs at warm-up and capture only]): a kernel reads
// per-step values from ctx.scalars(), never from host values.
//
// A kernel is registered by C++ code linked into the module
// (register_kernel, e.g. kernels.cpp registers the demo MLP's step from the
// stepgraph_demo library). Ownership: the registry owns its definitions;
// a composed step keeps a shared_ptr to each kernel it launches.
// Thread-safety: register_kernel and find_kernel are thread-safe.
// Capture: `enqueue` runs during capture; it may only launch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <stepgraph/runtime/executor.h>

namespace stepgraph::python {

namespace rt = stepgraph::runtime;

enum class Role { kInput, kOutput, kState, kScratch };
[[nodiscard]] std::string_view to_string(Role role) noexcept;

/// One parameter of a launch resolved to a declared buffer.
struct BoundBuffer {
  std::string param;
  std::string buffer;
  Role role = Role::kInput;
  std::size_t bytes = 0;
};

/// A launch after Step.launch() resolved it.
struct ResolvedLaunch {
  std::string kernel;
  std::string node;
  std::vector<BoundBuffer> buffers;
  std::map<std::string, std::int64_t, std::less<>> attrs;
};

/// What a kernel's check (no context) and enqueue (during the step
/// function, with the slot's buffers) see of one launch.
class LaunchArgs {
 public:
  LaunchArgs(const ResolvedLaunch& launch, const rt::StepContext* ctx) : launch_(launch), ctx_(ctx) {}
  [[nodiscard]] const std::string& node() const noexcept { return launch_.node; }
  [[nodiscard]] const std::string& kernel() const noexcept { return launch_.kernel; }
  [[nodiscard]] std::int64_t attr(std::string_view name) const;
  [[nodiscard]] const BoundBuffer& bound(std::string_view param) const;
  [[nodiscard]] std::size_t bytes(std::string_view param) const { return bound(param).bytes; }
  /// The slot's buffer bound to `param` (enqueue only).
  [[nodiscard]] const rt::Buffer& buffer(std::string_view param) const;
  [[nodiscard]] const rt::StepContext& context() const;
  /// InvalidArgument unless `param`'s buffer has exactly `bytes` bytes;
  /// `what` says how the kernel computes them ("batch x inputs floats").
  void require_bytes(std::string_view param, std::size_t bytes, std::string_view what) const;

 private:
  const ResolvedLaunch& launch_;
  const rt::StepContext* ctx_;
};

struct KernelDef {
  std::string doc;
  std::vector<std::string> buffers;                // parameter names; each must be bound
  std::vector<std::string> attrs;                  // integer attributes; each must be given
  std::function<void(const LaunchArgs&)> check;    // at Step.launch(): sizes against attributes
  std::function<void(const LaunchArgs&)> enqueue;  // in the step function (warm-up, capture)
};

/// Registers `def` under `name`; InvalidArgument if the name is taken.
void register_kernel(std::string name, KernelDef def);
/// The kernel called `name`; InvalidArgument naming the registered ones if none.
[[nodiscard]] std::shared_ptr<const KernelDef> find_kernel(std::string_view name);
/// Every registered kernel, by name.
[[nodiscard]] std::map<std::string, std::shared_ptr<const KernelDef>, std::less<>> registered_kernels();

/// Registers the kernels the module ships (kernels.cpp): "demo.mlp_step"
/// and the host-only test kernel "test.sleep_fault_if". Idempotent.
void register_builtin_kernels();

}  // namespace stepgraph::python
