// Package stepgraph drives stepgraph's StepExecutor from Go through its C ABI
// (stepgraph/c/stepgraph.h, libstepgraph_c.so) with cgo.
//
// Note [Handles in Go]
// Every C handle is held as a uintptr, never as a Go pointer: the C side owns
// every object (buffers, streams, executors, replays), and a handle is an
// integer in its table of live handles (the header's Note [Handles]). Each Go
// object that owns a handle has a finalizer (runtime.SetFinalizer) that
// releases the C side when the object is collected without Release having
// been called; Release is explicit, idempotent and preferred (a finalizer may
// run late, or never before exit). Methods keep their receiver alive across
// the C call (runtime.KeepAlive) so that a finalizer cannot release a handle
// while a call on it runs.
//
// Note [Errors into Go]
// Every executor gets the C error callback sg_go_on_error (callback.c), with
// the integer value of a cgo.Handle as its user_data: no Go pointer is ever
// stored in C memory (cgocheck). The callback runs on the executor's own
// thread, which Go adopts for the call; sgGoOnError sends a *StepError to the
// executor's Errors() channel (buffered, never blocking the executor's
// thread), then calls the optional Options.OnError hook; a panic in the hook
// is recovered and sent to the channel as a *CallbackPanic, so the process
// stays up and the C side never sees a Go panic unwind through it.
//
// Note [Last error]
// sg_last_error() is per OS thread, and a goroutine may move to another
// thread between two cgo calls; call() locks the goroutine to its thread for
// the failing call and the read of its message.
//
// Thread-safety: as the C ABI's (calls on different objects, and on one
// Executor from several goroutines, are safe); an Inputs or Replay is used by
// one goroutine at a time. No method may be called from a C kernel or from
// the OnError hook except Error's methods (the C side refuses them:
// SG_INVALID_STATE).
package stepgraph

/*
#cgo LDFLAGS: -lstepgraph_c
#include <stdint.h>
#include <stdlib.h>
#include <stepgraph/c/stepgraph.h>

void sg_go_set_error_callback(sg_executor_options* options, uintptr_t key);
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"runtime/cgo"
	"runtime/debug"
	"sync/atomic"
	"time"
	"unsafe"
)

// Status is the C ABI's sg_status.
type Status int

const (
	OK              Status = C.SG_OK
	InvalidArgument Status = C.SG_INVALID_ARGUMENT
	InvalidState    Status = C.SG_INVALID_STATE
	DeviceFault     Status = C.SG_DEVICE_FAULT
	Timeout         Status = C.SG_TIMEOUT
	OutOfMemory     Status = C.SG_OUT_OF_MEMORY
	BackendError    Status = C.SG_BACKEND_ERROR
	Internal        Status = C.SG_INTERNAL
)

func (s Status) String() string { return C.GoString(C.sg_status_string(C.sg_status(s))) }

// Error is a failed call: its status and sg_last_error()'s message, which
// starts with the C function's name.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string { return e.Status.String() + ": " + e.Message }

// StatusOf is err's Status (OK for nil, Internal for an error not from here).
func StatusOf(err error) Status {
	if err == nil {
		return OK
	}
	if e, ok := err.(*Error); ok {
		return e.Status
	}
	return Internal
}

// call runs one C call and turns its status into an error (Note [Last
// error]); keep is kept alive until the call has returned (Note [Handles in Go]).
func call(keep any, f func() C.sg_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s := f()
	runtime.KeepAlive(keep)
	if s == C.SG_OK {
		return nil
	}
	return &Error{Status: Status(s), Message: C.GoString(C.sg_last_error())}
}

// finalized counts the handles released by finalizers (for tests: the C
// side of a collected object is released).
var finalized atomic.Int64

// FinalizedCount is how many C handles finalizers have released so far.
func FinalizedCount() int64 { return finalized.Load() }

// handle is what every owning object embeds: the C handle, swapped to 0 by
// the first release.
type handle struct{ h atomic.Uintptr }

func (x *handle) get() uintptr { return x.h.Load() }

// release calls free on the handle once; later calls are no-ops.
func (x *handle) release(free func(uintptr) C.sg_status) error {
	h := x.h.Swap(0)
	if h == 0 {
		return nil
	}
	return call(nil, func() C.sg_status { return free(h) })
}

// own gives the handle an owning object embeds.
func (x *handle) own() *handle { return x }

// finalize arranges for free to run on obj's handle when obj is collected.
// The finalizer reaches the handle through its argument: a closure over obj
// would keep obj reachable, and it would never be collected.
func finalize[T any, P interface {
	*T
	own() *handle
}](obj P, free func(uintptr) C.sg_status) {
	runtime.SetFinalizer(obj, func(o P) {
		if h := o.own().h.Swap(0); h != 0 {
			free(h)
			finalized.Add(1)
		}
	})
}

func cstr(s string) (*C.char, func()) {
	p := C.CString(s)
	return p, func() { C.free(unsafe.Pointer(p)) }
}

// The handle types, from and to uintptr (Note [Handles in Go]). A handle is
// reinterpreted, not converted (uintptr -> unsafe.Pointer would read as
// pointer arithmetic to go vet); its top bit is set, so the garbage
// collector never takes the pointer-typed copy passed to C for a Go pointer.
func as[T any](h uintptr) *T { return *(**T)(unsafe.Pointer(&h)) }

var (
	backendOf  = as[C.sg_backend]
	bufferOf   = as[C.sg_buffer]
	streamOf   = as[C.sg_stream]
	graphOf    = as[C.sg_graph]
	execOf     = as[C.sg_graph_exec]
	descOf     = as[C.sg_step_desc]
	executorOf = as[C.sg_executor]
	inputsOf   = as[C.sg_inputs]
	replayOf   = as[C.sg_replay]
)

func outPtr[T any](out *uintptr) **T               { return (**T)(unsafe.Pointer(out)) }
func floats(p unsafe.Pointer, n uintptr) []float32 { return unsafe.Slice((*float32)(p), n/4) }

// ------------------------------------------------------------------ backend

// Backend is sg_backend: "host", "cuda" or "auto".
type Backend struct{ handle }

func freeBackend(h uintptr) C.sg_status { return C.sg_backend_release(backendOf(h)) }

// NewBackend makes a backend; hostDevices is the host backend's device count.
func NewBackend(name string, hostDevices int) (*Backend, error) {
	n, free := cstr(name)
	defer free()
	var h uintptr
	if err := call(nil, func() C.sg_status {
		return C.sg_backend_create(n, C.int(hostDevices), outPtr[C.sg_backend](&h))
	}); err != nil {
		return nil, err
	}
	b := &Backend{}
	b.h.Store(h)
	finalize(b, freeBackend)
	return b, nil
}

// Release releases the Go side's reference; objects made from it keep it alive.
func (b *Backend) Release() error { return b.release(freeBackend) }

// Handle is the C handle's value (0 once released).
func (b *Backend) Handle() uintptr { return b.get() }

// DeviceCount is the backend's device count.
func (b *Backend) DeviceCount() (int, error) {
	var n C.int
	err := call(b, func() C.sg_status { return C.sg_backend_device_count(backendOf(b.get()), &n) })
	return int(n), err
}

// ------------------------------------------------------------------ buffers

// Buffer is sg_buffer: device memory, or pinned host memory.
type Buffer struct{ handle }

func freeBuffer(h uintptr) C.sg_status { return C.sg_buffer_release(bufferOf(h)) }

func newBuffer(h uintptr) *Buffer {
	x := &Buffer{}
	x.h.Store(h)
	finalize(x, freeBuffer)
	return x
}

// AllocPinned allocates page-locked host memory mapped into every device.
func (b *Backend) AllocPinned(bytes int) (*Buffer, error) {
	var h uintptr
	if err := call(b, func() C.sg_status {
		return C.sg_buffer_alloc_pinned(backendOf(b.get()), C.size_t(bytes), outPtr[C.sg_buffer](&h))
	}); err != nil {
		return nil, err
	}
	return newBuffer(h), nil
}

// AllocDevice allocates device memory on device.
func (b *Backend) AllocDevice(device, bytes int) (*Buffer, error) {
	var h uintptr
	if err := call(b, func() C.sg_status {
		return C.sg_buffer_alloc_device(backendOf(b.get()), C.int(device), C.size_t(bytes), outPtr[C.sg_buffer](&h))
	}); err != nil {
		return nil, err
	}
	return newBuffer(h), nil
}

// Float32s is a pinned buffer's memory, in place (C memory: valid until
// Release; keep the Buffer reachable while using it).
func (x *Buffer) Float32s() ([]float32, error) {
	var p unsafe.Pointer
	var n C.size_t
	err := call(x, func() C.sg_status {
		if s := C.sg_buffer_host_ptr(bufferOf(x.get()), &p); s != C.SG_OK {
			return s
		}
		return C.sg_buffer_size(bufferOf(x.get()), &n)
	})
	if err != nil {
		return nil, err
	}
	return floats(p, uintptr(n)), nil
}

// Release releases the buffer; work enqueued on it still completes.
func (x *Buffer) Release() error { return x.release(freeBuffer) }

// Handle is the C handle's value (0 once released).
func (x *Buffer) Handle() uintptr { return x.get() }

// ------------------------------------------------- streams, capture, graphs

// Access is sg_access_mode.
type Access int

const (
	Read      Access = C.SG_ACCESS_READ
	Write     Access = C.SG_ACCESS_WRITE
	ReadWrite Access = C.SG_ACCESS_READ_WRITE
)

// BufferAccess is one declared access of a direct launch (bytes 0: to the end).
type BufferAccess struct {
	Buffer        *Buffer
	Offset, Bytes int
	Mode          Access
}

// Stream is sg_stream.
type Stream struct{ handle }

func freeStream(h uintptr) C.sg_status { return C.sg_stream_release(streamOf(h)) }

// NewStream makes a stream on device.
func (b *Backend) NewStream(device int) (*Stream, error) {
	var h uintptr
	if err := call(b, func() C.sg_status {
		return C.sg_stream_create(backendOf(b.get()), C.int(device), outPtr[C.sg_stream](&h))
	}); err != nil {
		return nil, err
	}
	s := &Stream{}
	s.h.Store(h)
	finalize(s, freeStream)
	return s, nil
}

// Launch enqueues the registered kernel on the stream (capturable).
func (s *Stream) Launch(kernel, node string, accesses []BufferAccess, threads int) error {
	k, freeK := cstr(kernel)
	defer freeK()
	var n *C.char
	if node != "" {
		var freeN func()
		n, freeN = cstr(node)
		defer freeN()
	}
	acc := make([]C.sg_buffer_access, len(accesses)) // Go memory holding no Go pointer
	for i, a := range accesses {
		acc[i] = C.sg_buffer_access{buffer: bufferOf(a.Buffer.get()), offset: C.size_t(a.Offset),
			bytes: C.size_t(a.Bytes), mode: C.sg_access_mode(a.Mode)}
	}
	var p *C.sg_buffer_access
	if len(acc) > 0 {
		p = &acc[0]
	}
	return call([]any{s, accesses}, func() C.sg_status {
		return C.sg_stream_launch(streamOf(s.get()), k, n, p, C.size_t(len(acc)), C.size_t(threads))
	})
}

// Synchronize waits for the stream's work.
func (s *Stream) Synchronize() error {
	return call(s, func() C.sg_status { return C.sg_stream_synchronize(streamOf(s.get())) })
}

// CaptureMode is sg_capture_mode.
type CaptureMode int

const (
	CaptureGlobal      CaptureMode = C.SG_CAPTURE_GLOBAL
	CaptureThreadLocal CaptureMode = C.SG_CAPTURE_THREAD_LOCAL
	CaptureRelaxed     CaptureMode = C.SG_CAPTURE_RELAXED
)

// Capture records what fn enqueues on the stream into a graph. A global or
// thread-local capture must end on the thread that began it, so the
// goroutine stays locked to its thread until the capture has ended.
func (s *Stream) Capture(mode CaptureMode, fn func() error) (*Graph, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := call(s, func() C.sg_status {
		return C.sg_stream_begin_capture(streamOf(s.get()), C.sg_capture_mode(mode))
	}); err != nil {
		return nil, err
	}
	ferr := fn()
	var h uintptr
	err := call(s, func() C.sg_status { return C.sg_stream_end_capture(streamOf(s.get()), outPtr[C.sg_graph](&h)) })
	if err != nil {
		return nil, err
	}
	g := &Graph{}
	g.h.Store(h)
	finalize(g, freeGraph)
	if ferr != nil {
		g.Release()
		return nil, ferr
	}
	return g, nil
}

// Release releases the stream (not while it captures).
func (s *Stream) Release() error { return s.release(freeStream) }

// Graph is sg_graph, a captured graph.
type Graph struct{ handle }

func freeGraph(h uintptr) C.sg_status { return C.sg_graph_release(graphOf(h)) }

// NodeCount is the graph's node count.
func (g *Graph) NodeCount() (int, error) {
	var n C.size_t
	err := call(g, func() C.sg_status { return C.sg_graph_node_count(graphOf(g.get()), &n) })
	return int(n), err
}

// Instantiate makes an executable graph.
func (g *Graph) Instantiate() (*GraphExec, error) {
	var h uintptr
	if err := call(g, func() C.sg_status {
		return C.sg_graph_instantiate(graphOf(g.get()), outPtr[C.sg_graph_exec](&h))
	}); err != nil {
		return nil, err
	}
	x := &GraphExec{}
	x.h.Store(h)
	finalize(x, freeExec)
	return x, nil
}

// Release releases the graph; executables made from it do not need it.
func (g *Graph) Release() error { return g.release(freeGraph) }

// GraphExec is sg_graph_exec, an executable graph.
type GraphExec struct{ handle }

func freeExec(h uintptr) C.sg_status { return C.sg_graph_exec_release(execOf(h)) }

// Launch enqueues one run of the executable on s.
func (x *GraphExec) Launch(s *Stream) error {
	return call([]any{x, s}, func() C.sg_status { return C.sg_graph_exec_launch(execOf(x.get()), streamOf(s.get())) })
}

// Release releases the executable; enqueued runs still complete.
func (x *GraphExec) Release() error { return x.release(freeExec) }

// ------------------------------------------------------------------ kernels

// RegisterKernel registers a C kernel under name: host is the address of a C
// function `int fn(void* const* args, size_t nargs, void* user_data)` (in Go:
// unsafe.Pointer(C.sg_host_kernel_fn(C.my_kernel))), device the address of a
// __global__ function or nil. userData must be C memory (never a Go pointer)
// and outlive every executor using the kernel.
func RegisterKernel(name string, host, device, userData unsafe.Pointer) error {
	n, free := cstr(name)
	defer free()
	return call(nil, func() C.sg_status {
		return C.sg_kernel_register(n, C.sg_host_kernel_fn(host), device, userData)
	})
}

// UnregisterKernel removes the name.
func UnregisterKernel(name string) error {
	n, free := cstr(name)
	defer free()
	return call(nil, func() C.sg_status { return C.sg_kernel_unregister(n) })
}

// --------------------------------------------------------- step description

// Role is sg_buffer_role.
type Role int

const (
	Input   Role = C.SG_ROLE_INPUT
	Output  Role = C.SG_ROLE_OUTPUT
	State   Role = C.SG_ROLE_STATE
	Scratch Role = C.SG_ROLE_SCRATCH
)

// ScalarsBuffer names the executor's per-step scalars (sg_step_scalars).
const ScalarsBuffer = C.SG_SCALARS_BUFFER

// ScalarsLearningRateOffset is offsetof(sg_step_scalars, learning_rate).
const ScalarsLearningRateOffset = int(unsafe.Offsetof(C.sg_step_scalars{}.learning_rate))

// StepAccess is one declared access of a step's launch (bytes 0: to the end).
type StepAccess struct {
	Buffer        string
	Offset, Bytes int
	Mode          Access
}

// StepDesc is sg_step_desc, a step under construction (one goroutine).
type StepDesc struct{ handle }

func freeDesc(h uintptr) C.sg_status { return C.sg_step_desc_release(descOf(h)) }

// NewStepDesc starts a step description.
func NewStepDesc() (*StepDesc, error) {
	var h uintptr
	if err := call(nil, func() C.sg_status { return C.sg_step_desc_create(outPtr[C.sg_step_desc](&h)) }); err != nil {
		return nil, err
	}
	d := &StepDesc{}
	d.h.Store(h)
	finalize(d, freeDesc)
	return d, nil
}

// AddBuffer declares a buffer.
func (d *StepDesc) AddBuffer(role Role, name string, bytes int) error {
	n, free := cstr(name)
	defer free()
	return call(d, func() C.sg_status {
		return C.sg_step_desc_add_buffer(descOf(d.get()), C.sg_buffer_role(role), n, C.size_t(bytes))
	})
}

// AddLaunch appends a launch of a registered kernel ("" node: the kernel's name).
func (d *StepDesc) AddLaunch(kernel, node string, accesses []StepAccess, threads int) error {
	var frees []func()
	defer func() {
		for _, f := range frees {
			f()
		}
	}()
	str := func(s string) *C.char {
		if s == "" {
			return nil
		}
		p, f := cstr(s)
		frees = append(frees, f)
		return p
	}
	acc := make([]C.sg_access, len(accesses)) // Go memory holding C pointers only
	for i, a := range accesses {
		acc[i] = C.sg_access{buffer: str(a.Buffer), offset: C.size_t(a.Offset), bytes: C.size_t(a.Bytes),
			mode: C.sg_access_mode(a.Mode)}
	}
	var p *C.sg_access
	if len(acc) > 0 {
		p = &acc[0]
	}
	k, n := str(kernel), str(node)
	return call(d, func() C.sg_status {
		return C.sg_step_desc_add_launch(descOf(d.get()), k, n, p, C.size_t(len(acc)), C.size_t(threads))
	})
}

// Release releases the description (an executor made from it has a copy).
func (d *StepDesc) Release() error { return d.release(freeDesc) }

// ----------------------------------------------------------------- executor

// ErrorKind is sg_error_kind.
type ErrorKind int

const (
	KindDeviceFault ErrorKind = C.SG_ERROR_DEVICE_FAULT
	KindTimeout     ErrorKind = C.SG_ERROR_TIMEOUT
	KindCancelled   ErrorKind = C.SG_ERROR_CANCELLED
	KindCallback    ErrorKind = C.SG_ERROR_CALLBACK
	KindCollective  ErrorKind = C.SG_ERROR_COLLECTIVE
)

// StepError is an asynchronous failure (sg_step_error), copied into Go.
type StepError struct {
	Step    int64  // -1 if unknown
	Node    string // "" if unknown
	Kind    ErrorKind
	Message string
}

func (e *StepError) Error() string {
	return fmt.Sprintf("step %d, node %q: %s", e.Step, e.Node, e.Message)
}

func stepErrorOf(e *C.sg_step_error) *StepError {
	se := &StepError{Step: int64(e.step), Kind: ErrorKind(e.kind), Message: C.GoString(e.message)}
	if e.node != nil {
		se.Node = C.GoString(e.node)
	}
	return se
}

// CallbackPanic is a panic of an Options.OnError hook, recovered.
type CallbackPanic struct {
	Value any
	Cause *StepError // the error the hook was handling
	Stack string
}

func (p *CallbackPanic) Error() string {
	return fmt.Sprintf("stepgraph: the OnError hook panicked (%v) while handling %v", p.Value, p.Cause)
}

// Options are sg_executor_options; zero values take the C defaults.
type Options struct {
	Warmup      *int // nil: 3
	MaxInFlight int  // 0: 2
	Eager       bool
	DeadlineMs  uint32
	// OnError, if set, is called on the executor's thread after the error
	// was sent to Errors(). It must not call the executor; a panic in it is
	// recovered and sent to Errors() as a *CallbackPanic.
	OnError func(*StepError)
	// ErrorBuffer is the capacity of Errors() (0: 16). A full channel drops
	// the error (counted by Dropped) rather than block the executor.
	ErrorBuffer int
}

// errorSink receives one executor's asynchronous errors (Note [Errors into Go]).
type errorSink struct {
	ch      chan error
	hook    func(*StepError)
	dropped atomic.Int64
}

func (s *errorSink) send(err error) {
	select {
	case s.ch <- err:
	default:
		s.dropped.Add(1)
		fmt.Fprintf(os.Stderr, "stepgraph: Errors() is full, dropped: %v\n", err)
	}
}

//export sgGoOnError
func sgGoOnError(e *C.sg_step_error, key C.uintptr_t) {
	defer func() { // nothing may unwind into C
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "stepgraph: error callback failed: %v\n", r)
		}
	}()
	sink := cgo.Handle(key).Value().(*errorSink)
	se := stepErrorOf(e)
	sink.send(se)
	if sink.hook == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			sink.send(&CallbackPanic{Value: r, Cause: se, Stack: string(debug.Stack())})
		}
	}()
	sink.hook(se)
}

// Executor is sg_executor, with its error channel.
type Executor struct {
	handle
	sink *errorSink
	key  cgo.Handle
}

func (e *Executor) free(h uintptr) C.sg_status {
	s := C.sg_executor_release(executorOf(h)) // joins the executor's thread: no callback after this
	e.key.Delete()
	return s
}

// NewExecutor makes an executor for desc (copied) on b.
func NewExecutor(b *Backend, desc *StepDesc, o Options) (*Executor, error) {
	var co C.sg_executor_options
	if err := call(nil, func() C.sg_status { return C.sg_executor_options_init(&co) }); err != nil {
		return nil, err
	}
	if o.Warmup != nil {
		co.warmup = C.int(*o.Warmup)
	}
	if o.MaxInFlight > 0 {
		co.max_in_flight = C.int(o.MaxInFlight)
	}
	if o.Eager {
		co.mode = C.SG_MODE_EAGER
	}
	co.deadline_ms = C.uint32_t(o.DeadlineMs)
	if o.ErrorBuffer <= 0 {
		o.ErrorBuffer = 16
	}
	sink := &errorSink{ch: make(chan error, o.ErrorBuffer), hook: o.OnError}
	key := cgo.NewHandle(sink)
	C.sg_go_set_error_callback(&co, C.uintptr_t(key)) // an integer in user_data, not a Go pointer
	var h uintptr
	if err := call([]any{b, desc}, func() C.sg_status {
		return C.sg_executor_create(backendOf(b.get()), descOf(desc.get()), &co, outPtr[C.sg_executor](&h))
	}); err != nil {
		key.Delete()
		return nil, err
	}
	e := &Executor{sink: sink, key: key}
	e.h.Store(h)
	runtime.SetFinalizer(e, func(e *Executor) {
		if h := e.h.Swap(0); h != 0 {
			e.free(h)
			finalized.Add(1)
		}
	})
	return e, nil
}

// Errors delivers the executor's asynchronous failures (*StepError) and
// recovered hook panics (*CallbackPanic).
func (e *Executor) Errors() <-chan error { return e.sink.ch }

// Dropped is how many errors a full Errors() channel dropped.
func (e *Executor) Dropped() int64 { return e.sink.dropped.Load() }

// Prepare warms up, captures and instantiates.
func (e *Executor) Prepare() error {
	return call(e, func() C.sg_status { return C.sg_executor_prepare(executorOf(e.get())) })
}

// SetLearningRate is seen by the next replay.
func (e *Executor) SetLearningRate(lr float32) error {
	return call(e, func() C.sg_status { return C.sg_executor_set_learning_rate(executorOf(e.get()), C.float(lr)) })
}

// WriteState copies data into the state buffer name (len must match).
func (e *Executor) WriteState(name string, data []float32) error {
	n, free := cstr(name)
	defer free()
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0]) // Go memory holding no Go pointer: allowed for the call
	}
	return call([]any{e, data}, func() C.sg_status {
		return C.sg_executor_write_state(executorOf(e.get()), n, p, C.size_t(4*len(data)))
	})
}

// ReadState copies the state buffer name into data (len must match).
func (e *Executor) ReadState(name string, data []float32) error {
	n, free := cstr(name)
	defer free()
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	return call([]any{e, data}, func() C.sg_status {
		return C.sg_executor_read_state(executorOf(e.get()), n, p, C.size_t(4*len(data)))
	})
}

// Synchronize waits for every replay handed out so far.
func (e *Executor) Synchronize() error {
	return call(e, func() C.sg_status { return C.sg_executor_synchronize(executorOf(e.get())) })
}

// Failed reports whether the executor failed.
func (e *Executor) Failed() (bool, error) {
	var st C.sg_executor_state
	err := call(e, func() C.sg_status { return C.sg_executor_get_state(executorOf(e.get()), &st) })
	return st == C.SG_EXECUTOR_FAILED, err
}

// Release closes the executor and releases it; Errors() gets nothing after.
func (e *Executor) Release() error { return e.release(e.free) }

// Inputs is sg_inputs, a slot's pinned inputs.
type Inputs struct{ handle }

func freeInputs(h uintptr) C.sg_status { return C.sg_inputs_release(inputsOf(h)) }

// AcquireInputs takes a free slot (blocks while none is free).
func (e *Executor) AcquireInputs() (*Inputs, error) {
	var h uintptr
	if err := call(e, func() C.sg_status {
		return C.sg_executor_acquire_inputs(executorOf(e.get()), outPtr[C.sg_inputs](&h))
	}); err != nil {
		return nil, err
	}
	in := &Inputs{}
	in.h.Store(h)
	finalize(in, freeInputs)
	return in, nil
}

// Float32s is the slot's pinned input name, in place (zero copy; C memory,
// valid until the replay that consumes the slot is released).
func (in *Inputs) Float32s(name string) ([]float32, error) {
	n, free := cstr(name)
	defer free()
	var p unsafe.Pointer
	var size C.size_t
	if err := call(in, func() C.sg_status { return C.sg_inputs_ptr(inputsOf(in.get()), n, &p, &size) }); err != nil {
		return nil, err
	}
	return floats(p, uintptr(size)), nil
}

// Release gives the slot back unused.
func (in *Inputs) Release() error { return in.release(freeInputs) }

// Replay is sg_replay, one step started (one goroutine at a time).
type Replay struct {
	handle
	waiter chan struct{} // closed when Done's goroutine has returned from Wait
}

func freeReplay(h uintptr) C.sg_status { return C.sg_replay_release(replayOf(h)) }

// Replay starts one step on in's slot (in is consumed whatever happens).
func (e *Executor) Replay(in *Inputs) (*Replay, error) {
	ih := in.h.Swap(0)
	var h uintptr
	if err := call(e, func() C.sg_status {
		return C.sg_executor_replay(executorOf(e.get()), inputsOf(ih), outPtr[C.sg_replay](&h))
	}); err != nil {
		return nil, err
	}
	r := &Replay{}
	r.h.Store(h)
	finalize(r, freeReplay)
	return r, nil
}

// Wait waits up to timeout (< 0: forever); nil when the step is done.
func (r *Replay) Wait(timeout time.Duration) error {
	ms := C.int64_t(-1)
	if timeout >= 0 {
		ms = C.int64_t(timeout.Milliseconds())
	}
	return call(r, func() C.sg_status { return C.sg_replay_wait(replayOf(r.get()), ms, nil) })
}

// Done waits in a goroutine: the channel gets Wait's result, then closes.
// Release waits for that goroutine (a C handle must not be released while
// another thread waits on it); the wait is bounded: a failed or closed
// executor completes its replays.
func (r *Replay) Done() <-chan error {
	ch := make(chan error, 1)
	waiter := make(chan struct{})
	r.waiter = waiter
	go func() {
		defer close(waiter)
		ch <- r.Wait(-1)
		close(ch)
	}()
	return ch
}

// Step is the replay's step number.
func (r *Replay) Step() (int64, error) {
	var s C.int64_t
	err := call(r, func() C.sg_status { return C.sg_replay_step(replayOf(r.get()), &s) })
	return int64(s), err
}

// Error is the replay's failure, or nil.
func (r *Replay) Error() (*StepError, error) {
	var has C.int
	var e C.sg_step_error
	if err := call(r, func() C.sg_status { return C.sg_replay_error(replayOf(r.get()), &has, &e) }); err != nil {
		return nil, err
	}
	if has == 0 {
		return nil, nil
	}
	return stepErrorOf(&e), nil
}

// OutputFloat32s is the slot's pinned output name, in place (C memory, valid
// until Release). Read it after the replay is done.
func (r *Replay) OutputFloat32s(name string) ([]float32, error) {
	n, free := cstr(name)
	defer free()
	var p unsafe.Pointer
	var size C.size_t
	if err := call(r, func() C.sg_status {
		return C.sg_replay_output(replayOf(r.get()), n, (*unsafe.Pointer)(unsafe.Pointer(&p)), &size)
	}); err != nil {
		return nil, err
	}
	return floats(p, uintptr(size)), nil
}

// Release gives the slot back (its outputs may be overwritten from now on),
// after Done's goroutine, if any, has finished waiting.
func (r *Replay) Release() error {
	if r.waiter != nil {
		<-r.waiter
	}
	return r.release(freeReplay)
}
