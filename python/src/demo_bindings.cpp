// stepgraph.demo: the demo MLP's data and its C++ reference run
// (stepgraph_demo, tools/demo), so that a Python program can train the same
// model through a composed Step ("demo.mlp_step") and compare with the C++
// demo bit for bit. Reentrant; train_mlp releases the GIL.
#include <cstdint>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <stepgraph/core/error.h>
#include <stepgraph/demo/mlp.h>

#include "module.h"

namespace stepgraph::python {

namespace {

using namespace py::literals;

demo::MlpShape shape_of(int batch, int inputs, int hidden) {
  demo::MlpShape s;
  s.batch = batch;
  s.inputs = inputs;
  s.hidden = hidden;
  return s;
}

py::array_t<float> to_numpy(const std::vector<float>& v) {
  py::array_t<float> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

}  // namespace

void bind_demo(py::module_& m) {
  py::module_ d = m.def_submodule("demo", "The demo MLP (stepgraph::demo): data, parameters, C++ reference run.");
  d.def(
      "param_count", [](int batch, int inputs, int hidden) { return shape_of(batch, inputs, hidden).param_count(); },
      "batch"_a, "inputs"_a, "hidden"_a);
  d.def(
      "init_params",
      [](int batch, int inputs, int hidden, std::uint64_t seed) {
        return to_numpy(demo::mlp_init_params(shape_of(batch, inputs, hidden), seed));
      },
      "batch"_a, "inputs"_a, "hidden"_a, "seed"_a);
  d.def(
      "make_batch",
      [](int batch, int inputs, int hidden, std::uint64_t seed, std::int64_t step) {
        const demo::MlpShape s = shape_of(batch, inputs, hidden);
        py::array_t<float> x({static_cast<py::ssize_t>(batch), static_cast<py::ssize_t>(inputs)});
        py::array_t<float> y(static_cast<py::ssize_t>(batch));
        demo::mlp_make_batch(s, seed, step, {x.mutable_data(), static_cast<std::size_t>(x.size())},
                             {y.mutable_data(), static_cast<std::size_t>(y.size())});
        return py::make_tuple(x, y);
      },
      "batch"_a, "inputs"_a, "hidden"_a, "seed"_a, "step"_a,
      "The batch (x, y) of step `step`: a pure function of (seed, step).");
  d.def("learning_rate", &demo::mlp_learning_rate, "base"_a, "step"_a, "steps"_a);
  d.def(
      "train_mlp",
      [](int batch, int inputs, int hidden, int steps, int warmup, std::uint64_t seed, float learning_rate,
         int max_in_flight, const std::string& mode, const std::string& backend) {
        STEPGRAPH_CHECK(mode == "graph" || mode == "eager", InvalidArgument, "mode is '{}'; give 'graph' or 'eager'",
                        mode);
        demo::DemoOptions o;
        o.backend = backend;
        o.shape = shape_of(batch, inputs, hidden);
        o.steps = steps;
        o.warmup = warmup;
        o.seed = seed;
        o.learning_rate = learning_rate;
        o.max_in_flight = max_in_flight;
        demo::TrainingRun run;
        {
          py::gil_scoped_release unlocked;
          run = demo::train_mlp(o, mode == "eager" ? runtime::ExecutionMode::kEager : runtime::ExecutionMode::kGraph);
        }
        return py::make_tuple(to_numpy(run.params), to_numpy(run.losses));
      },
      "batch"_a, "inputs"_a, "hidden"_a, "steps"_a, "warmup"_a, "seed"_a, "learning_rate"_a, "max_in_flight"_a = 2,
      "mode"_a = "graph", "backend"_a = "host",
      "The C++ demo's training run (stepgraph::demo::train_mlp; mode 'graph' or 'eager'): (params, losses).");
}

}  // namespace stepgraph::python
