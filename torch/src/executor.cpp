// TorchStepExecutor (Note [Torch steps on the CPU]).
#include <stepgraph/torch/executor.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stepgraph/collectives/bucketer.h>
#include <stepgraph/core/error.h>

namespace stepgraph::torchstep {
namespace rt = stepgraph::runtime;
namespace col = stepgraph::collectives;

namespace {

rt::DType to_dtype(::torch::Dtype t, const std::string& name) {
  switch (t) {
    case ::torch::kFloat32:
      return rt::DType::kFloat32;
    case ::torch::kFloat64:
      return rt::DType::kFloat64;
    case ::torch::kInt64:
      return rt::DType::kInt64;
    case ::torch::kInt32:
      return rt::DType::kInt32;
    case ::torch::kUInt8:
      return rt::DType::kUInt8;
    default:
      throw InvalidArgument(
          fmt::format("TorchStepExecutor: '{}' has dtype {}; supported: float32, float64, int64, "
                      "int32, uint8",
                      name, std::string(c10::toString(t))));
  }
}

std::size_t numel(const TensorSpec& s) {
  std::size_t n = 1;
  for (std::int64_t d : s.shape) {
    STEPGRAPH_CHECK(d >= 0, InvalidArgument, "TorchStepExecutor: '{}' has a negative dimension in [{}]", s.name,
                    fmt::join(s.shape, ", "));
    n *= static_cast<std::size_t>(d);
  }
  return n;
}

std::size_t bytes_of(const TensorSpec& s) {
  return numel(s) * c10::elementSize(s.dtype);
}

::torch::Tensor over(void* data, const TensorSpec& s) {
  return ::torch::from_blob(data, s.shape, ::torch::TensorOptions().dtype(s.dtype));
}

std::string shape_text(c10::IntArrayRef shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

}  // namespace

::torch::Tensor TorchStep::input(const std::string& name) const {
  const auto it = inputs_.find(name);
  STEPGRAPH_CHECK(it != inputs_.end(), InvalidArgument, "TorchStep::input: no input '{}' was declared", name);
  return it->second;
}

::torch::Tensor TorchStep::output(const std::string& name) const {
  const auto it = outputs_.find(name);
  STEPGRAPH_CHECK(it != outputs_.end(), InvalidArgument, "TorchStep::output: no output '{}' was declared", name);
  return it->second;
}

/// What the executor's step function and the caller share.
struct TorchStepExecutor::Shared {
  std::shared_ptr<::torch::nn::Module> module;
  std::shared_ptr<::torch::optim::Optimizer> optimizer;
  TorchStepFn fn;
  TorchExecutorOptions options;
  std::vector<std::pair<std::string, ::torch::Tensor>> params;  // named, module order
  col::BucketPlan plan;
  std::vector<std::size_t> grad_offset;  // per parameter: bytes into the gradient storage
  float* bound_to = nullptr;
  std::unique_ptr<col::GradientBucketer> bucketer;

  /// Points every parameter's .grad at its place in the gradient storage
  /// (autograd then accumulates in place there).
  void bind_grads(float* storage) {
    if (bound_to == storage) return;
    ::torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i) {
      ::torch::Tensor& p = params[i].second;
      p.mutable_grad() = ::torch::from_blob(reinterpret_cast<std::byte*>(storage) + grad_offset[i], p.sizes(),
                                            ::torch::TensorOptions().dtype(::torch::kFloat32));
    }
    bound_to = storage;
  }

  /// One eager step, no executor: what a plain libtorch loop does.
  void eager_step(const std::map<std::string, ::torch::Tensor>& inputs) {
    for (auto& [name, p] : params) p.mutable_grad().zero_();
    TorchStep step;
    step.inputs_ = inputs;
    ::torch::Tensor loss = fn(step);
    loss.backward();
    optimizer->step();
  }
};

TorchStepExecutor::TorchStepExecutor(std::shared_ptr<::torch::nn::Module> module,
                                     std::shared_ptr<::torch::optim::Optimizer> optimizer, TorchStepFn step,
                                     TorchExecutorOptions options)
    : shared_(std::make_shared<Shared>()) {
  STEPGRAPH_CHECK(module && optimizer && step, InvalidArgument,
                  "TorchStepExecutor: give a module, an optimizer and a step closure");
  Shared& sh = *shared_;
  sh.module = std::move(module);
  sh.optimizer = std::move(optimizer);
  sh.fn = std::move(step);
  sh.options = std::move(options);
  for (const TensorSpec& s : sh.options.outputs)
    STEPGRAPH_CHECK(s.name != "loss", InvalidArgument,
                    "TorchStepExecutor: output 'loss' is the executor's own (the closure's return value)");
  sh.options.outputs.push_back({.name = "loss", .shape = {}, .dtype = ::torch::kFloat32});
  std::set<std::string> names;
  for (const auto* list : {&sh.options.inputs, &sh.options.outputs})
    for (const TensorSpec& s : *list) {
      STEPGRAPH_CHECK(names.insert(s.name).second, InvalidArgument, "TorchStepExecutor: '{}' is declared twice",
                      s.name);
      (void)to_dtype(s.dtype, s.name);
      STEPGRAPH_CHECK(bytes_of(s) > 0, InvalidArgument, "TorchStepExecutor: '{}' has no elements (shape {})", s.name,
                      shape_text(s.shape));
    }

  // The gradients, in the order backward produces them (the last
  // parameter's first), laid out by the bucket plan.
  for (const auto& item : sh.module->named_parameters(/*recurse=*/true)) {
    STEPGRAPH_CHECK(item.value().scalar_type() == ::torch::kFloat32 && item.value().device().is_cpu(), InvalidArgument,
                    "TorchStepExecutor: parameter '{}' is {} on {}; this build trains float32 CPU parameters",
                    item.key(), std::string(c10::toString(item.value().scalar_type())), item.value().device().str());
    if (item.value().requires_grad()) sh.params.emplace_back(item.key(), item.value());
  }
  STEPGRAPH_CHECK(!sh.params.empty(), InvalidArgument, "TorchStepExecutor: the module has no trainable parameter");
  std::vector<col::GradientSpec> ready;
  for (auto it = sh.params.rbegin(); it != sh.params.rend(); ++it)
    ready.push_back({.name = it->first, .count = static_cast<std::size_t>(it->second.numel())});
  col::BucketOptions bo;
  bo.bucket_cap_bytes = sh.options.bucket_cap_bytes;
  bo.first_bucket_cap_bytes = sh.options.first_bucket_cap_bytes;
  sh.plan = col::plan_buckets(ready, bo);
  sh.grad_offset.resize(sh.params.size());
  for (std::size_t g = 0; g < ready.size(); ++g) sh.grad_offset[sh.params.size() - 1 - g] = sh.plan.gradients[g].offset;
  buckets_ = sh.plan.buckets.size();

  rt::StepSpec spec;
  for (const TensorSpec& s : sh.options.inputs)
    spec.inputs.push_back({.name = s.name, .bytes = bytes_of(s), .dtype = to_dtype(s.dtype, s.name), .mode = s.mode});
  for (const TensorSpec& s : sh.options.outputs)
    spec.outputs.push_back({.name = s.name, .bytes = bytes_of(s), .dtype = to_dtype(s.dtype, s.name)});
  spec.state.push_back({.name = "grads", .bytes = sh.plan.storage_bytes, .dtype = rt::DType::kFloat32});

  rt::ExecutorOptions eo = sh.options.executor;
  if (sh.options.communicator) {
    eo.collectives = sh.options.communicator;
    eo.backend_instance = sh.options.communicator->backend_ptr();
    eo.device = sh.options.communicator->device();
    sh.bucketer = std::make_unique<col::GradientBucketer>(sh.plan, sh.options.communicator);
  }
  if (!eo.backend_instance && eo.backend == "auto") eo.backend = "host";

  std::weak_ptr<Shared> weak = shared_;
  rt::StepFunction fn = [weak](rt::StepContext& ctx) {
    const auto sh = weak.lock();
    STEPGRAPH_CHECK(sh != nullptr, InvalidState, "TorchStepExecutor: the step ran after its executor was destroyed");
    const rt::Buffer& grads = ctx.state("grads");
    sh->bind_grads(grads.data<float>());
    rt::StreamRef stream = ctx.stream();
    stream.memset(grads.slice(), 0, "zero gradients");
    // This slot's tensors, made now (host code at warm-up and capture);
    // the node reads the buffers' contents at each replay.
    auto step = std::make_shared<TorchStep>();
    std::vector<rt::BufferAccess> accesses{rt::read_write(grads)};
    for (const TensorSpec& s : sh->options.inputs) {
      step->inputs_[s.name] = over(ctx.input(s.name).data(), s);
      accesses.push_back(rt::read(ctx.input(s.name)));
    }
    for (const TensorSpec& s : sh->options.outputs) {
      step->outputs_[s.name] = over(ctx.output(s.name).data(), s);
      accesses.push_back(rt::write(ctx.output(s.name)));
    }
    stream.host_fn(
        "torch forward+backward",
        [weak, step] {
          const auto sh = weak.lock();
          if (!sh) return;
          ::torch::Tensor loss = sh->fn(*step);
          STEPGRAPH_CHECK(loss.defined() && loss.numel() == 1, InvalidArgument,
                          "the step closure must return the scalar loss (it returned a tensor of shape {})",
                          loss.defined() ? shape_text(loss.sizes()) : std::string("undefined"));
          loss.backward();
          ::torch::NoGradGuard no_grad;
          step->outputs_.at("loss").copy_(loss.detach().reshape({}).to(::torch::kFloat32));
        },
        accesses);
    if (sh->bucketer) {
      // Every gradient is complete when the backward node ends: on the CPU
      // the buckets' AllReduces follow backward as a whole.
      sh->bucketer->begin(stream, grads);
      for (std::size_t g = 0; g < sh->plan.gradients.size(); ++g) sh->bucketer->ready(stream, g);
      sh->bucketer->finish(stream);
    }
    stream.host_fn("torch optimizer step",
                   [weak] {
                     if (const auto sh = weak.lock()) sh->optimizer->step();
                   },
                   {rt::read(grads)});
  };
  rt::StepSpec copy = spec;
  executor_ = std::make_unique<rt::StepExecutor>(std::move(copy), std::move(fn), eo);
}

TorchStepExecutor::~TorchStepExecutor() {
  // The gradient storage goes with the executor: the parameters get
  // gradients of their own again, copied once the last replay is done (or
  // zeros after a failure, when a replay may still be running).
  const bool failed = executor_->state() == rt::ExecutorState::kFailed;
  if (!failed) {
    try {
      executor_->synchronize();
    } catch (const std::exception&) {  // failed meanwhile: zeros below
    }
  }
  const bool copy = !failed && executor_->state() != rt::ExecutorState::kFailed;
  {
    ::torch::NoGradGuard no_grad;
    for (auto& [name, p] : shared_->params)
      if (p.grad().defined()) p.mutable_grad() = copy ? p.grad().clone() : ::torch::zeros_like(p);
  }
  executor_.reset();
}

void TorchStepExecutor::prepare() {
  executor_->prepare();
}

rt::InputSlot TorchStepExecutor::acquire_inputs() {
  return executor_->acquire_inputs();
}

::torch::Tensor TorchStepExecutor::slot_input(const rt::InputSlot& slot, const std::string& name) const {
  for (const TensorSpec& s : shared_->options.inputs)
    if (s.name == name) return over(slot.input(name).host_data(), s);
  throw InvalidArgument(fmt::format("TorchStepExecutor::slot_input: no input '{}' was declared", name));
}

rt::ReplayHandle TorchStepExecutor::replay(rt::InputSlot slot) {
  return executor_->replay(std::move(slot));
}

rt::ReplayHandle TorchStepExecutor::replay(const std::map<std::string, ::torch::Tensor>& inputs) {
  const auto& specs = shared_->options.inputs;
  for (const auto& [name, t] : inputs)
    STEPGRAPH_CHECK(std::any_of(specs.begin(), specs.end(), [&](const TensorSpec& s) { return s.name == name; }),
                    InvalidArgument, "TorchStepExecutor::replay: input '{}' was not declared", name);
  for (const TensorSpec& s : specs) {
    const auto it = inputs.find(s.name);
    STEPGRAPH_CHECK(it != inputs.end(), InvalidArgument, "TorchStepExecutor::replay: input '{}' is missing", s.name);
    const ::torch::Tensor& t = it->second;
    STEPGRAPH_CHECK(t.defined(), InvalidArgument, "TorchStepExecutor::replay: input '{}' is undefined", s.name);
    STEPGRAPH_CHECK(t.scalar_type() == s.dtype, InvalidArgument,
                    "TorchStepExecutor::replay: input '{}' is {}, declared {}", s.name,
                    std::string(c10::toString(t.scalar_type())), std::string(c10::toString(s.dtype)));
    STEPGRAPH_CHECK(t.sizes().vec() == s.shape, InvalidArgument,
                    "TorchStepExecutor::replay: input '{}' has shape {}, declared {}", s.name, shape_text(t.sizes()),
                    shape_text(s.shape));
  }
  rt::InputSlot slot = executor_->acquire_inputs();
  for (const TensorSpec& s : specs) {
    const ::torch::Tensor src = inputs.at(s.name).to(::torch::kCPU).contiguous();
    std::memcpy(slot.input(s.name).host_data(), src.data_ptr(), bytes_of(s));
  }
  return executor_->replay(std::move(slot));
}

::torch::Tensor TorchStepExecutor::output(const rt::ReplayHandle& handle, const std::string& name) const {
  for (const TensorSpec& s : shared_->options.outputs)
    if (s.name == name) return over(handle.output(name).host_data(), s);
  throw InvalidArgument(fmt::format("TorchStepExecutor::output: no output '{}' was declared", name));
}

namespace {

/// The module's parameters and buffers, cloned, by name.
std::map<std::string, ::torch::Tensor> snapshot(::torch::nn::Module& m) {
  std::map<std::string, ::torch::Tensor> out;
  for (const auto& p : m.named_parameters(true)) out["param " + p.key()] = p.value().detach().clone();
  for (const auto& b : m.named_buffers(true)) out["buffer " + b.key()] = b.value().detach().clone();
  return out;
}

void restore(::torch::nn::Module& m, const std::map<std::string, ::torch::Tensor>& from) {
  ::torch::NoGradGuard no_grad;
  for (const auto& p : m.named_parameters(true)) p.value().copy_(from.at("param " + p.key()));
  for (const auto& b : m.named_buffers(true)) b.value().copy_(from.at("buffer " + b.key()));
}

std::string save_optimizer(::torch::optim::Optimizer& o) {
  ::torch::serialize::OutputArchive archive;
  o.save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

void load_optimizer(::torch::optim::Optimizer& o, const std::string& bytes) {
  ::torch::serialize::InputArchive archive;
  std::istringstream in(bytes);
  archive.load_from(in);
  o.state().clear();  // load() only sets the entries the archive has (none before the first step)
  o.load(archive);
}

}  // namespace

EagerComparison TorchStepExecutor::check_against_eager(
    int k, const std::function<std::map<std::string, ::torch::Tensor>(int)>& make_inputs) {
  STEPGRAPH_CHECK(k > 0, InvalidArgument, "check_against_eager: k must be positive (it is {})", k);
  STEPGRAPH_CHECK(!shared_->options.communicator, InvalidArgument,
                  "check_against_eager: single process only (this executor has a communicator: the eager run would "
                  "need its peers)");
  Shared& sh = *shared_;
  const auto start_module = snapshot(*sh.module);
  const std::string start_optimizer = save_optimizer(*sh.optimizer);
  for (int i = 0; i < k; ++i) {
    rt::ReplayHandle h = replay(make_inputs(i));
    const rt::ReplayStatus st = h.wait();
    const auto err = h.error();
    h.release();
    STEPGRAPH_CHECK(st == rt::ReplayStatus::kDone, InvalidState, "check_against_eager: replay {} ended {}: {}", i,
                    to_string(st), err ? err->message : std::string("no error"));
  }
  const auto replayed = snapshot(*sh.module);
  const std::string replayed_optimizer = save_optimizer(*sh.optimizer);

  restore(*sh.module, start_module);
  load_optimizer(*sh.optimizer, start_optimizer);
  for (int i = 0; i < k; ++i) sh.eager_step(make_inputs(i));
  const auto eager = snapshot(*sh.module);

  EagerComparison out;
  for (const auto& [name, t] : replayed) {
    const double d = (t.to(::torch::kFloat64) - eager.at(name).to(::torch::kFloat64)).abs().max().item<double>();
    out.max_abs_diff[name] = d;
    out.worst = std::max(out.worst, d);
  }
  restore(*sh.module, replayed);
  load_optimizer(*sh.optimizer, replayed_optimizer);
  return out;
}

}  // namespace stepgraph::torchstep
