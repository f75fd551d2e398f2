// The registry of kernels a Python step is composed from (kernels.h,
// Note [Composed steps]) and the kernels the module ships.
#include "kernels.h"

#include <chrono>
#include <mutex>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include <stepgraph/core/error.h>
#include <stepgraph/demo/mlp.h>

namespace stepgraph::python {

std::string_view to_string(Role role) noexcept {
  switch (role) {
    case Role::kInput:
      return "input";
    case Role::kOutput:
      return "output";
    case Role::kState:
      return "state";
    case Role::kScratch:
      return "scratch";
  }
  return "?";
}

std::int64_t LaunchArgs::attr(std::string_view name) const {
  const auto it = launch_.attrs.find(name);
  STEPGRAPH_CHECK(it != launch_.attrs.end(), InvalidArgument, "kernel '{}' (node '{}'): attribute '{}' is not given",
                  launch_.kernel, launch_.node, name);
  return it->second;
}

const BoundBuffer& LaunchArgs::bound(std::string_view param) const {
  for (const BoundBuffer& b : launch_.buffers)
    if (b.param == param) return b;
  throw InvalidArgument(
      fmt::format("kernel '{}' (node '{}'): parameter '{}' is not bound", launch_.kernel, launch_.node, param));
}

const rt::StepContext& LaunchArgs::context() const {
  STEPGRAPH_CHECK(ctx_ != nullptr, InvalidState,
                  "kernel '{}': the step's buffers exist only inside the step function (enqueue), not in check",
                  launch_.kernel);
  return *ctx_;
}

const rt::Buffer& LaunchArgs::buffer(std::string_view param) const {
  const BoundBuffer& b = bound(param);
  const rt::StepContext& ctx = context();
  switch (b.role) {
    case Role::kInput:
      return ctx.input(b.buffer);
    case Role::kOutput:
      return ctx.output(b.buffer);
    case Role::kState:
      return ctx.state(b.buffer);
    case Role::kScratch:
      return ctx.scratch(b.buffer);
  }
  throw InvalidState(fmt::format("kernel '{}': buffer '{}' has no role (internal)", launch_.kernel, b.buffer));
}

void LaunchArgs::require_bytes(std::string_view param, std::size_t bytes, std::string_view what) const {
  const BoundBuffer& b = bound(param);
  STEPGRAPH_CHECK(b.bytes == bytes, InvalidArgument,
                  "kernel '{}' (node '{}'): parameter '{}' is bound to {} '{}' of {} bytes; it needs {} bytes ({})",
                  launch_.kernel, launch_.node, param, to_string(b.role), b.buffer, b.bytes, bytes, what);
}

namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<const KernelDef>, std::less<>> kernels;
};
Registry& registry() {
  static auto* r = new Registry;  // never destroyed: a step may outlive static destruction order
  return *r;
}

// --- "demo.mlp_step": the demo MLP's training step (stepgraph_demo), its
// buffers those of demo::mlp_step_spec, its launches demo::enqueue_mlp_step.
demo::MlpShape mlp_shape(const LaunchArgs& a) {
  const auto narrow = [&](std::string_view name) {
    const std::int64_t v = a.attr(name);
    STEPGRAPH_CHECK(v >= 1 && v <= (1 << 24), InvalidArgument, "kernel '{}': attribute {} is {}; give 1 .. 2^24",
                    a.kernel(), name, v);
    return static_cast<int>(v);
  };
  demo::MlpShape s;
  s.batch = narrow("batch");
  s.inputs = narrow("inputs");
  s.hidden = narrow("hidden");
  return s;
}

KernelDef mlp_step_kernel() {
  KernelDef k;
  k.doc =
      "The demo MLP's training step (stepgraph::demo::enqueue_mlp_step): seven kernels, forward, MSE loss, "
      "backward, SGD with the learning rate read from the executor's scalars. Buffers as "
      "demo::mlp_step_spec: inputs x (batch x inputs float32), y (batch); output loss (1); state params "
      "(param_count); scratch grads (param_count), act, dact (batch x hidden), out, dout (batch).";
  k.buffers = {"x", "y", "loss", "params", "grads", "act", "dact", "out", "dout"};
  k.attrs = {"batch", "inputs", "hidden"};
  k.check = [](const LaunchArgs& a) {
    const demo::MlpShape s = mlp_shape(a);
    const rt::StepSpec spec = demo::mlp_step_spec(s);  // the library's sizes, not a second copy of them
    for (const auto* list : {&spec.inputs, &spec.outputs, &spec.state, &spec.scratch})
      for (const rt::BufferSpec& b : *list)
        a.require_bytes(b.name, b.bytes,
                        fmt::format("demo::mlp_step_spec, batch {} inputs {} hidden {}", s.batch, s.inputs, s.hidden));
  };
  k.enqueue = [](const LaunchArgs& a) {
    const demo::MlpShape s = mlp_shape(a);
    demo::MlpStepBuffers b;
    b.x = &a.buffer("x");
    b.y = &a.buffer("y");
    b.loss = &a.buffer("loss");
    b.params = &a.buffer("params");
    b.grads = &a.buffer("grads");
    b.act = &a.buffer("act");
    b.dact = &a.buffer("dact");
    b.out = &a.buffer("out");
    b.dout = &a.buffer("dout");
    b.scalars = &a.context().scalars();
    demo::enqueue_mlp_step(a.context().stream(), s, b);
  };
  return k;
}

// --- "test.sleep_fault_if": host backend only. Sleeps `sleep_us`, then
// faults (DeviceFault naming the node) if the int32 at flag[0] is nonzero.
// The flag is read at run time, so a replay faults when the program has
// written a nonzero flag into that slot's input: the error tests use it.
KernelDef sleep_fault_kernel() {
  KernelDef k;
  k.doc =
      "Host backend only (tests): sleeps attribute sleep_us microseconds, then fails with a device fault "
      "naming its node if the int32 flag[0] is nonzero (read at run time).";
  k.buffers = {"flag"};
  k.attrs = {"sleep_us"};
  k.check = [](const LaunchArgs& a) {
    STEPGRAPH_CHECK(a.bytes("flag") >= sizeof(std::int32_t), InvalidArgument,
                    "kernel '{}': flag has {} bytes; it needs at least 4 (one int32)", a.kernel(), a.bytes("flag"));
    const std::int64_t us = a.attr("sleep_us");
    STEPGRAPH_CHECK(us >= 0 && us <= 10'000'000, InvalidArgument, "kernel '{}': sleep_us is {}; give 0 .. 1e7",
                    a.kernel(), us);
  };
  k.enqueue = [](const LaunchArgs& a) {
    const rt::Buffer& flag = a.buffer("flag");
    rt::KernelParams p;
    p.name = a.node();
    p.dims = rt::LaunchDims::linear(1, 32);
    p.accesses = {rt::read(flag, 0, sizeof(std::int32_t))};
    p.host = [ptr = flag.data<const std::int32_t>(), us = a.attr("sleep_us"), node = a.node()] {
      if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
      if (*ptr != 0) throw DeviceFault(fmt::format("node '{}': flag is {} (an injected fault)", node, *ptr), node);
    };
    a.context().stream().launch_kernel(std::move(p));
  };
  return k;
}

}  // namespace

void register_kernel(std::string name, KernelDef def) {
  STEPGRAPH_CHECK(!name.empty(), InvalidArgument, "register_kernel: the name is empty");
  STEPGRAPH_CHECK(static_cast<bool>(def.enqueue), InvalidArgument, "register_kernel('{}'): enqueue is empty", name);
  std::lock_guard lock(registry().mutex);
  const bool added = registry().kernels.emplace(name, std::make_shared<const KernelDef>(std::move(def))).second;
  STEPGRAPH_CHECK(added, InvalidArgument, "kernel '{}' is registered already", name);
}

std::shared_ptr<const KernelDef> find_kernel(std::string_view name) {
  std::lock_guard lock(registry().mutex);
  const auto it = registry().kernels.find(name);
  if (it != registry().kernels.end()) return it->second;
  std::string names;
  for (const auto& [n, _] : registry().kernels) names += (names.empty() ? "" : ", ") + n;
  throw InvalidArgument(fmt::format("no kernel is registered as '{}'; registered: {}", name, names));
}

std::map<std::string, std::shared_ptr<const KernelDef>, std::less<>> registered_kernels() {
  std::lock_guard lock(registry().mutex);
  return registry().kernels;
}

void register_builtin_kernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_kernel("demo.mlp_step", mlp_step_kernel());
    register_kernel("test.sleep_fault_if", sleep_fault_kernel());
  });
}

}  // namespace stepgraph::python
