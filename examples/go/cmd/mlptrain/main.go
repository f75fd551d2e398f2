// mlptrain: the Go client of stepgraph's C ABI (package stepgraph), tested
// by ctest go_client (tests/go).
//
//  1. Trains the demo MLP through the executor — the step described in Go
//     (the same buffers and launches as tests/capi/mlp_step.c), the demo's
//     host kernels registered by name as C function pointers — selecting on
//     the executor's error channel while each replay runs, and checks the
//     parameters and losses against the C++ demo (stepgraph::demo::train_mlp,
//     through the C shim the C test uses), bit for bit.
//  2. Injects a fault (a kernel that fails at step 2): the error must arrive
//     on the channel with its step and node while the application selects.
//  3. An OnError hook that panics: recovered, reported on the channel, the
//     process stays up and goes on.
//
// The wrapper's own tests (bad input, capture, finalizers) are
// stepgraph/stepgraph_test.go.
// Exit status 0 iff every check held.
package main

/*
#cgo LDFLAGS: -lsg_capi_test_shim -lstepgraph_c
#include <stdlib.h>
#include <time.h>
#include "mlp_shim.h"

// A kernel for the fault test (not static: Go takes its address): copies in[0] to out[0]; fails (returns 7)
// when it is 13, after 50 ms, so that the fault arrives while the
// application is waiting.
int copy_or_fault(void* const* args, size_t nargs, void* user_data) {
  (void)user_data;
  if (nargs != 2) return 1;
  const int v = *(const int*)args[0];
  if (v == 13) {
    const struct timespec t = {0, 50 * 1000 * 1000};
    nanosleep(&t, NULL);
    return 7;
  }
  *(int*)args[1] = v;
  return 0;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	sg "stepgraph.example/sg/stepgraph"
)

var failures int

func check(ok bool, format string, args ...any) {
	if !ok {
		failures++
		fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	}
}

func must(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %s: %v\n", what, err)
		os.Exit(1)
	}
}

// kernel is the address of a C kernel, as RegisterKernel takes it.
func kernel(fn C.sg_host_kernel_fn) unsafe.Pointer { return unsafe.Pointer(fn) }

// [Go example: the MLP step] — tests/capi/mlp_step.c's step, described in Go.
func mlpStep(d *C.sgt_mlp_dims) (*sg.StepDesc, error) {
	const f = 4
	batch, hidden := int(d.batch), int(d.hidden)
	np := int(C.sgt_mlp_param_count(d))
	b1, w2 := int(C.sgt_mlp_b1_offset(d)), int(C.sgt_mlp_w2_offset(d))
	desc, err := sg.NewStepDesc()
	if err != nil {
		return nil, err
	}
	buffers := []struct {
		role  sg.Role
		name  string
		bytes int
	}{
		{sg.Input, "x", batch * int(d.inputs) * f}, {sg.Input, "y", batch * f}, {sg.Output, "loss", f},
		{sg.State, "params", np * f}, {sg.Scratch, "grads", np * f}, {sg.Scratch, "act", batch * hidden * f},
		{sg.Scratch, "dact", batch * hidden * f}, {sg.Scratch, "out", batch * f}, {sg.Scratch, "dout", batch * f},
	}
	for _, b := range buffers {
		if err := desc.AddBuffer(b.role, b.name, b.bytes); err != nil {
			return nil, err
		}
	}
	a := func(mode sg.Access) func(string, int, int) sg.StepAccess {
		return func(name string, off, bytes int) sg.StepAccess {
			return sg.StepAccess{Buffer: name, Offset: off, Bytes: bytes, Mode: mode}
		}
	}
	r, w, rw := a(sg.Read), a(sg.Write), a(sg.ReadWrite)
	launches := []struct {
		kernel   string
		accesses []sg.StepAccess
		threads  int
	}{
		{"mlp.forward_hidden", []sg.StepAccess{r("x", 0, 0), r("params", 0, b1*f+hidden*f), w("act", 0, 0)}, batch * hidden},
		{"mlp.forward_output", []sg.StepAccess{r("act", 0, 0), r("params", w2*f, (hidden+1)*f), r("y", 0, 0),
			w("out", 0, 0), w("dout", 0, 0)}, batch},
		{"mlp.mse_loss", []sg.StepAccess{r("out", 0, 0), r("y", 0, 0), w("loss", 0, 0)}, 1},
		{"mlp.grad_output", []sg.StepAccess{r("act", 0, 0), r("dout", 0, 0), w("grads", w2*f, (hidden+1)*f)}, hidden + 1},
		{"mlp.backward_hidden", []sg.StepAccess{r("act", 0, 0), r("dout", 0, 0), r("params", w2*f, hidden*f),
			w("dact", 0, 0)}, batch * hidden},
		{"mlp.grad_hidden", []sg.StepAccess{r("x", 0, 0), r("dact", 0, 0), w("grads", 0, w2*f)}, w2},
		// The learning rate is read from the executor's scalars at replay time.
		{"mlp.sgd_update", []sg.StepAccess{rw("params", 0, np*f), r("grads", 0, np*f),
			r(sg.ScalarsBuffer, sg.ScalarsLearningRateOffset, 4)}, np},
	}
	for _, l := range launches {
		if err := desc.AddLaunch(l.kernel, "", l.accesses, l.threads); err != nil {
			return nil, err
		}
	}
	return desc, nil
}

func registerMlpKernels(d *C.sgt_mlp_dims) error {
	kernels := map[string]C.sg_host_kernel_fn{
		"mlp.forward_hidden":  C.sg_host_kernel_fn(C.sgt_forward_hidden),
		"mlp.forward_output":  C.sg_host_kernel_fn(C.sgt_forward_output),
		"mlp.mse_loss":        C.sg_host_kernel_fn(C.sgt_mse_loss),
		"mlp.grad_output":     C.sg_host_kernel_fn(C.sgt_grad_output),
		"mlp.backward_hidden": C.sg_host_kernel_fn(C.sgt_backward_hidden),
		"mlp.grad_hidden":     C.sg_host_kernel_fn(C.sgt_grad_hidden),
		"mlp.sgd_update":      C.sg_host_kernel_fn(C.sgt_sgd_update),
	}
	for name, fn := range kernels {
		// user_data: the dims, in C memory (never a Go pointer in C memory).
		if err := sg.RegisterKernel(name, kernel(fn), nil, unsafe.Pointer(d)); err != nil {
			return err
		}
	}
	return nil
}

// [Go example: training] — each replay runs while the application selects
// on the executor's error channel and on the replay's completion.
func train(d *C.sgt_mlp_dims, steps, warmup int, seed uint64, lr float32) (params, losses []float32, err error) {
	backend, err := sg.NewBackend("host", 1)
	if err != nil {
		return nil, nil, err
	}
	defer backend.Release()
	desc, err := mlpStep(d)
	if err != nil {
		return nil, nil, err
	}
	defer desc.Release()
	ex, err := sg.NewExecutor(backend, desc, sg.Options{Warmup: &warmup})
	if err != nil {
		return nil, nil, err
	}
	defer ex.Release()

	params = make([]float32, int(C.sgt_mlp_param_count(d)))
	losses = make([]float32, steps)
	if C.sgt_mlp_init_params(d, C.uint64_t(seed), (*C.float)(&params[0])) != 0 {
		return nil, nil, errors.New("sgt_mlp_init_params failed")
	}
	if err := ex.WriteState("params", params); err != nil {
		return nil, nil, err
	}
	for step := 0; step < steps; step++ {
		if err := ex.SetLearningRate(float32(C.sgt_mlp_learning_rate(C.float(lr), C.int64_t(step), C.int(steps)))); err != nil {
			return nil, nil, err
		}
		in, err := ex.AcquireInputs()
		if err != nil {
			return nil, nil, err
		}
		x, err := in.Float32s("x") // pinned: filled in place, zero copy
		if err != nil {
			return nil, nil, err
		}
		y, err := in.Float32s("y")
		if err != nil {
			return nil, nil, err
		}
		if C.sgt_mlp_make_batch(d, C.uint64_t(seed), C.int64_t(step), (*C.float)(&x[0]), (*C.float)(&y[0])) != 0 {
			return nil, nil, errors.New("sgt_mlp_make_batch failed")
		}
		r, err := ex.Replay(in) // consumes in
		if err != nil {
			return nil, nil, err
		}
		select {
		case err := <-ex.Errors():
			r.Release()
			return nil, nil, fmt.Errorf("step %d: asynchronous error: %w", step, err)
		case err := <-r.Done():
			if err != nil {
				r.Release()
				return nil, nil, err
			}
		}
		loss, err := r.OutputFloat32s("loss")
		if err != nil {
			return nil, nil, err
		}
		losses[step] = loss[0]
		if err := r.Release(); err != nil { // gives the slot back
			return nil, nil, err
		}
	}
	if err := ex.Synchronize(); err != nil {
		return nil, nil, err
	}
	return params, losses, ex.ReadState("params", params)
}

func testTrainingMatchesCppDemo() {
	d := (*C.sgt_mlp_dims)(C.malloc(C.sizeof_sgt_mlp_dims)) // outlives the executors: never freed
	d.batch, d.inputs, d.hidden = 64, 16, 32
	const steps, warmup, seed, lr = 40, 3, 1, float32(0.05)
	must(registerMlpKernels(d), "register the MLP kernels")
	params, losses, err := train(d, steps, warmup, seed, lr)
	must(err, "train through the C ABI")
	refParams := make([]float32, len(params))
	refLosses := make([]float32, steps)
	if C.sgt_mlp_reference(d, steps, warmup, seed, C.float(lr), (*C.float)(&refParams[0]), (*C.float)(&refLosses[0])) != 0 {
		must(errors.New("sgt_mlp_reference failed"), "the C++ demo's run")
	}
	same := true
	for i := range params {
		if params[i] != refParams[i] {
			check(false, "param %d: Go %g, C++ demo %g", i, params[i], refParams[i])
			same = false
			break
		}
	}
	for i := range losses {
		check(losses[i] == refLosses[i], "loss %d: Go %g, C++ demo %g", i, losses[i], refLosses[i])
	}
	check(losses[steps-1] < losses[0], "it did not train: loss %g -> %g", losses[0], losses[steps-1])
	verdict := "bit-identical"
	if !same {
		verdict = "DIFFERENT"
	}
	fmt.Printf("mlp: %d params, loss %g -> %g, Go vs C++ demo %s\n", len(params), losses[0], losses[steps-1], verdict)
}

// faultExecutor is an executor of one step: in -> copy_or_fault -> out, as
// node "fault_node".
func faultExecutor(b *sg.Backend, o sg.Options) *sg.Executor {
	desc, err := sg.NewStepDesc()
	must(err, "NewStepDesc")
	defer desc.Release()
	must(desc.AddBuffer(sg.Input, "in", 4), "AddBuffer in")
	must(desc.AddBuffer(sg.Output, "out", 4), "AddBuffer out")
	must(desc.AddLaunch("go.copy_or_fault", "fault_node",
		[]sg.StepAccess{{Buffer: "in", Mode: sg.Read}, {Buffer: "out", Mode: sg.Write}}, 1), "AddLaunch")
	one := 1
	o.Warmup = &one
	ex, err := sg.NewExecutor(b, desc, o)
	must(err, "NewExecutor")
	return ex
}

// startStep fills the slot's input with v (an int32) and starts a replay.
func startStep(ex *sg.Executor, v int32) *sg.Replay {
	in, err := ex.AcquireInputs()
	must(err, "AcquireInputs")
	p, err := in.Float32s("in")
	must(err, "inputs")
	*(*int32)(unsafe.Pointer(&p[0])) = v
	r, err := ex.Replay(in)
	must(err, "Replay")
	return r
}

// [Go example: the fault arrives on the channel] — steps 0 (warm-up) and 1
// (capture) copy; step 2's kernel returns 7.
func testFaultArrivesOnTheChannel() {
	b, err := sg.NewBackend("host", 1)
	must(err, "NewBackend")
	defer b.Release()
	ex := faultExecutor(b, sg.Options{})
	defer ex.Release()
	var got *sg.StepError
	for step, v := range []int32{1, 2, 13} {
		r := startStep(ex, v)
		done := r.Done()
		timeout := time.After(10 * time.Second)
	wait: // until the replay has finished and, at step 2, the error has arrived
		for done != nil || (step == 2 && got == nil) {
			select {
			case err := <-ex.Errors(): // asynchronous, from the executor's thread
				check(step == 2, "an error arrived at step %d: %v", step, err)
				check(errors.As(err, &got), "the channel carried %T (%v), want *StepError", err, err)
			case err := <-done:
				done = nil
				if step < 2 {
					check(err == nil, "step %d: %v", step, err)
				} else {
					check(sg.StatusOf(err) == sg.DeviceFault, "step 2's wait: %v, want SG_DEVICE_FAULT", err)
				}
			case <-timeout:
				check(false, "step %d: not finished within 10 s (error so far: %v)", step, got)
				break wait
			}
		}
		r.Release()
	}
	check(got != nil && got.Step == 2 && got.Node == "fault_node" && got.Kind == sg.KindDeviceFault,
		"the channel's error: %+v, want step 2, node fault_node, a device fault", got)
	failed, err := ex.Failed()
	check(err == nil && failed, "the executor is not failed after the fault (%v)", err)
	_, err = ex.AcquireInputs()
	check(sg.StatusOf(err) == sg.InvalidState, "AcquireInputs after the fault: %v, want SG_INVALID_STATE", err)
	fmt.Printf("fault: %v\n", got)
}

// [Go example: a panicking hook] — recovered, reported on the channel.
func testPanickingHookIsRecovered() {
	b, err := sg.NewBackend("host", 1)
	must(err, "NewBackend")
	defer b.Release()
	ex := faultExecutor(b, sg.Options{OnError: func(e *sg.StepError) { panic("hook panics at step " + fmt.Sprint(e.Step)) }})
	defer ex.Release()
	for _, v := range []int32{1, 2, 13} {
		r := startStep(ex, v)
		r.Wait(10 * time.Second)
		r.Release()
	}
	var stepErr *sg.StepError
	var panicked *sg.CallbackPanic
	timeout := time.After(10 * time.Second)
	for stepErr == nil || panicked == nil {
		select {
		case err := <-ex.Errors():
			if !errors.As(err, &panicked) {
				check(errors.As(err, &stepErr), "unexpected %T on the channel: %v", err, err)
			}
		case <-timeout:
			check(false, "within 10 s: step error %v, panic %v", stepErr, panicked)
			return
		}
	}
	check(panicked.Value == "hook panics at step 2" && panicked.Cause.Node == "fault_node",
		"the recovered panic: %v (cause %v)", panicked.Value, panicked.Cause)
	fmt.Printf("panic: recovered (%v), the process goes on\n", panicked.Value)
}

func main() {
	must(sg.RegisterKernel("go.copy_or_fault", kernel(C.sg_host_kernel_fn(C.copy_or_fault)), nil, nil),
		"register go.copy_or_fault")
	testTrainingMatchesCppDemo()
	testFaultArrivesOnTheChannel()
	testPanickingHookIsRecovered()
	if failures != 0 {
		fmt.Fprintf(os.Stderr, "mlptrain: %d failure(s)\n", failures)
		os.Exit(1)
	}
	fmt.Println("mlptrain: all checks passed")
}
