/* stepgraph/c/stepgraph.h — the C ABI of stepgraph (libstepgraph_c.so).
 *
 * Plain C11, no C++ type: a step described as data (named buffers, then an
 * ordered list of launches of kernels registered by name), run by the
 * StepExecutor (stepgraph/runtime/executor.h) through opaque handles.
 *
 * Note [Status and last error]
 * Every function returns an sg_status. SG_OK is 0; on anything else
 * sg_last_error() gives the calling thread's message for it (naming the
 * function, the object and what to do next). A successful call does not
 * clear that message (as errno). No C++ exception ever leaves a function of
 * this header: each one catches everything and maps stepgraph's error types
 * (core/error.h) onto sg_status.
 *
 * Note [Handles]
 * Every handle (sg_backend, sg_buffer, sg_stream, sg_event, sg_graph,
 * sg_graph_exec, sg_step_desc, sg_executor, sg_inputs, sg_replay) is made by
 * one *_create / *_alloc* / end_capture / instantiate / acquire / replay call
 * and released by its *_release call, exactly once. A handle is
 * an opaque value, not an address (never dereference it): a slot index and a
 * generation count in a table of live handles, with the top bit set (never a
 * user-space address, so a garbage collector that sees one ignores it; a
 * language with its own integers may hold it as uintptr_t). NULL, a released
 * handle (even after its slot has been reused), a handle of another type or a
 * value the library never made is SG_INVALID_ARGUMENT, not a crash.
 * Handles may be released in any order: a buffer, stream, event, graph,
 * executable or executor keeps its backend alive; a graph and an executable
 * keep every buffer their nodes declared alive; sg_inputs and sg_replay stay safe to use after their
 * executor is released (they then report SG_INVALID_STATE / closed).
 *
 * Thread-safety (whole header, unless a function says otherwise): calls on
 * different handles, and on one executor from several threads, are safe. A
 * handle must not be released while another thread is using it; sg_inputs
 * and sg_replay handles are meant to be used by one thread at a time.
 *
 * Capture: no function of this header may be called from a kernel or from
 * the error callback except where it says so: kernels run on the backend's
 * worker threads (at warm-up, and at every replay of the captured graph).
 * Such a call is refused: SG_INVALID_STATE naming the call and where it was
 * made from (a kernel, the error callback); it changes nothing.
 * While a stream captures (sg_stream_begin_capture), the functions marked
 * "Capturable" below may be called on it (they are recorded into the graph,
 * not run); synchronizing or querying that stream, or an event recorded in
 * the capture, is SG_INVALID_STATE and invalidates the capture (as CUDA's
 * cudaErrorStreamCaptureUnsupported does): sg_stream_end_capture then fails
 * and leaves the stream usable. Allocation during a capture follows the
 * capture's mode (refused in GLOBAL and THREAD_LOCAL mode, from the
 * capturing thread).
 *
 * Note [Host code runs at warm-up and capture only] (executor.h) holds here
 * too: a step is described once; replays run the captured kernels with the
 * buffer addresses they had at capture. A per-step value (the learning rate)
 * must be read by a kernel from the SG_SCALARS_BUFFER access, never from a
 * host variable captured by the kernel's user_data.
 */
#ifndef STEPGRAPH_C_STEPGRAPH_H
#define STEPGRAPH_C_STEPGRAPH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SG_API __attribute__((visibility("default")))
#else
#define SG_API
#endif

/* ------------------------------------------------------------------ status */

typedef enum sg_status {
  SG_OK = 0,
  SG_INVALID_ARGUMENT = 1, /* NULL/released handle, unknown name, wrong size (stepgraph::InvalidArgument) */
  SG_INVALID_STATE = 2,    /* not allowed now: a failed or closed executor, no free slot (InvalidState) */
  SG_DEVICE_FAULT = 3,     /* a kernel faulted; sticky for its device and executor (DeviceFault) */
  SG_TIMEOUT = 4,          /* a wait ran out, or the executor's watchdog deadline passed */
  SG_OUT_OF_MEMORY = 5,    /* an allocation failed (std::bad_alloc) */
  SG_BACKEND_ERROR = 6,    /* a CUDA, NCCL, hwloc or MPI call failed */
  SG_INTERNAL = 7          /* any other failure: a bug, please report it with sg_last_error() */
} sg_status;

/* The enumerator's name ("SG_OK", ...); "SG_UNKNOWN_STATUS" for another value. */
SG_API const char* sg_status_string(sg_status status);
/* The calling thread's last error message; "" if no call of this thread has
 * failed. Valid until the thread's next failing call. Thread-safe (per
 * thread); may be called anywhere, from kernels and callbacks too. */
SG_API const char* sg_last_error(void);

/* ----------------------------------------------------------------- handles */

typedef struct sg_backend sg_backend;
typedef struct sg_buffer sg_buffer;
typedef struct sg_stream sg_stream;
typedef struct sg_event sg_event;
typedef struct sg_graph sg_graph;
typedef struct sg_graph_exec sg_graph_exec;
typedef struct sg_step_desc sg_step_desc;
typedef struct sg_executor sg_executor;
typedef struct sg_inputs sg_inputs;
typedef struct sg_replay sg_replay;

/* ----------------------------------------------------------------- backend */

/* Makes a backend: "host", "cuda" or "auto" (cuda when a device is present,
 * else host). host_devices: the host backend's device count (>= 1; ignored by
 * cuda). An unknown name is SG_INVALID_ARGUMENT; "cuda" without a device is
 * SG_INVALID_STATE with the reason. The caller owns *out. */
SG_API sg_status sg_backend_create(const char* name, int host_devices, sg_backend** out);
/* Releases the caller's reference; objects made from it keep it alive. */
SG_API sg_status sg_backend_release(sg_backend* backend);
/* "host" or "cuda" (a static string). */
SG_API sg_status sg_backend_name(const sg_backend* backend, const char** out);
SG_API sg_status sg_backend_device_count(const sg_backend* backend, int* out);

/* ----------------------------------------------------------------- buffers
 * Not allowed during a capture (they allocate). Accessors may be called
 * anywhere except from kernels. */

/* Device memory of `bytes` (> 0) bytes on `device`. Caller owns *out. */
SG_API sg_status sg_buffer_alloc_device(sg_backend* backend, int device, size_t bytes, sg_buffer** out);
/* Page-locked host memory mapped into every device. Caller owns *out. */
SG_API sg_status sg_buffer_alloc_pinned(sg_backend* backend, size_t bytes, sg_buffer** out);
/* The host address of a pinned buffer (valid until sg_buffer_release);
 * SG_INVALID_STATE for device memory (copy it with sg_stream_copy). */
SG_API sg_status sg_buffer_host_ptr(const sg_buffer* buffer, void** out);
SG_API sg_status sg_buffer_size(const sg_buffer* buffer, size_t* out);
/* Releases the handle. The memory goes when work enqueued on it is done
 * (a stream or graph that uses it keeps it alive). */
SG_API sg_status sg_buffer_release(sg_buffer* buffer);

/* ----------------------------------------------------------------- streams */

/* An owned, non-blocking stream on `device`. Caller owns *out. */
SG_API sg_status sg_stream_create(sg_backend* backend, int device, sg_stream** out);
/* Enqueues: sets bytes [offset, offset + bytes) of `dst` to `value`.
 * Capturable. */
SG_API sg_status sg_stream_memset(sg_stream* stream, sg_buffer* dst, size_t offset, size_t bytes, unsigned char value);
/* Enqueues a copy of `bytes` bytes; the direction follows from where the
 * buffers live. Ranges past a buffer's end are SG_INVALID_ARGUMENT.
 * Capturable. */
SG_API sg_status sg_stream_copy(sg_stream* stream, sg_buffer* dst, size_t dst_offset, const sg_buffer* src,
                                size_t src_offset, size_t bytes);
/* Waits for everything enqueued so far; SG_DEVICE_FAULT if the device faulted.
 * Not capturable (SG_INVALID_STATE; invalidates the stream's capture). */
SG_API sg_status sg_stream_synchronize(sg_stream* stream);
/* Destroys the stream; enqueued work still runs to completion. Not while
 * it captures (end the capture first: SG_INVALID_STATE). */
SG_API sg_status sg_stream_release(sg_stream* stream);

/* ------------------------------------------------------------------ events
 * Record on a stream, wait on it from any stream (also of another device),
 * query, synchronize. A wait binds to the latest record made before it; an
 * event never recorded counts as complete. */

/* An event on `device`. Caller owns *out. */
SG_API sg_status sg_event_create(sg_backend* backend, int device, sg_event** out);
/* Enqueues a record of `event` on `stream`. Capturable (a record node;
 * another stream waiting on it joins the capture, cudaStreamWaitEvent). */
SG_API sg_status sg_stream_record(sg_stream* stream, sg_event* event);
/* Makes later work on `stream` wait for the event's latest record.
 * Capturable. */
SG_API sg_status sg_stream_wait_event(sg_stream* stream, const sg_event* event);
/* *done = 1 if the latest record has completed. Not on an event recorded in
 * a capture in progress (SG_INVALID_STATE; invalidates the capture). */
SG_API sg_status sg_event_query(const sg_event* event, int* done);
/* Waits for the latest record; SG_DEVICE_FAULT if the device faulted.
 * Not capturable, as sg_event_query. */
SG_API sg_status sg_event_synchronize(const sg_event* event);
SG_API sg_status sg_event_release(sg_event* event);

/* ----------------------------------------------------------------- kernels
 *
 * Note [C kernels]
 * A host kernel is `int fn(void* const* args, size_t nargs, void* user_data)`.
 * args[i] is the device-visible BASE address of the buffer named by the
 * launch's i-th access (not advanced by the access's offset: the offset and
 * size only declare the range the kernel touches, which the backend checks
 * and orders by); nargs is the access count. Return 0 on success; any other
 * value is a device fault of that launch's node (sticky: the executor fails,
 * its error callback gets the step and the node). It runs on a worker thread
 * of the host backend, at warm-up and at every replay; it must touch only the
 * ranges it declared and must not call this header (except sg_last_error).
 * On the cuda backend, `device_fn` is the address of a
 * `__global__ void k(void* a0, void* a1, ...)` taking one pointer per access
 * in the same order, launched with ceil(threads / 128) blocks of 128.
 * A kernel is launched by name in two ways, with the same arguments: as an
 * op of a step (sg_step_desc_add_launch, accesses naming the step's
 * buffers) and directly on a stream (sg_stream_launch, accesses naming
 * sg_buffer handles), eagerly or into a stream capture.
 */
typedef int (*sg_host_kernel_fn)(void* const* args, size_t nargs, void* user_data);

/* Registers a kernel under `name` for the whole process (unique: a name
 * already registered is SG_INVALID_ARGUMENT). host may be NULL only if
 * device_fn is set, and the reverse. user_data is passed to every call of
 * `host`; it must outlive every executor made while the kernel was
 * registered. Thread-safe. */
SG_API sg_status sg_kernel_register(const char* name, sg_host_kernel_fn host, const void* device_fn, void* user_data);
/* Removes the name. Executors already made keep what they resolved. */
SG_API sg_status sg_kernel_unregister(const char* name);

/* --------------------------------------------------------- step description */

typedef enum sg_buffer_role {
  SG_ROLE_INPUT = 0,   /* pinned, one per slot, filled by the caller (sg_inputs_ptr), read in place */
  SG_ROLE_OUTPUT = 1,  /* pinned, one per slot, written by the step, read with sg_replay_output */
  SG_ROLE_STATE = 2,   /* device memory shared by every step (parameters); sg_executor_read/write_state */
  SG_ROLE_SCRATCH = 3, /* device memory per slot (activations, gradients) */
  /* Not values: they make every int a valid sg_buffer_role for C++ (whose
     enums hold only their enumerators' bit range), so that a bad value
     passed from C is SG_INVALID_ARGUMENT, not undefined behaviour. The same
     pair ends every enum taken as an argument. */
  SG_ROLE_RANGE_MIN_ = -2147483647 - 1,
  SG_ROLE_RANGE_MAX_ = 2147483647
} sg_buffer_role;

typedef enum sg_access_mode {
  SG_ACCESS_READ = 0,
  SG_ACCESS_WRITE = 1,
  SG_ACCESS_READ_WRITE = 2,
  SG_ACCESS_RANGE_MIN_ = -2147483647 - 1, /* not values: see sg_buffer_role */
  SG_ACCESS_RANGE_MAX_ = 2147483647
} sg_access_mode;

/* The executor's per-step scalars, readable by any launch that declares an
 * access to the buffer named SG_SCALARS_BUFFER (the layout of
 * stepgraph::runtime::StepScalars). */
#define SG_SCALARS_BUFFER "sg.scalars"
typedef struct sg_step_scalars {
  int64_t step;
  float learning_rate;
  float loss_scale;
  uint64_t rng_seed;
  uint64_t rng_offset;
} sg_step_scalars;

/* One declared access: bytes [offset, offset + bytes) of the named buffer;
 * bytes 0 means "to the buffer's end". */
typedef struct sg_access {
  const char* buffer;
  size_t offset;
  size_t bytes;
  sg_access_mode mode;
} sg_access;

/* A step under construction. Caller owns *out; not thread-safe (one thread
 * builds it). Names and accesses are copied. */
SG_API sg_status sg_step_desc_create(sg_step_desc** out);
/* Declares a buffer (bytes > 0; names unique over every role). */
SG_API sg_status sg_step_desc_add_buffer(sg_step_desc* desc, sg_buffer_role role, const char* name, size_t bytes);
/* Appends a launch of the registered kernel `kernel` as node `node` (NULL:
 * the kernel's name), with `threads` threads (cuda grid size; ignored on
 * host) and `count` accesses (the kernel's arguments, in order). Names are
 * checked by sg_executor_create, which sees every buffer. */
SG_API sg_status sg_step_desc_add_launch(sg_step_desc* desc, const char* kernel, const char* node,
                                         const sg_access* accesses, size_t count, size_t threads);
/* Appends a memset of bytes [offset, offset + bytes) (0: to the end) of a
 * declared buffer to `value`, as node `node` (NULL: "memset <buffer>"). */
SG_API sg_status sg_step_desc_add_memset(sg_step_desc* desc, const char* buffer, size_t offset, size_t bytes,
                                         unsigned char value, const char* node);
SG_API sg_status sg_step_desc_release(sg_step_desc* desc);

/* ------------------------------------ stream launches, capture and graphs
 * The backend's own stream model (runtime/backend.h), for code that builds
 * its graphs itself rather than through the executor: launch registered
 * kernels on a stream, capture a stream into a graph, instantiate it into an
 * executable, launch that on any stream of its device as often as wanted.
 * Ordering across streams goes through events (sg_stream_record /
 * sg_stream_wait_event), inside a capture too. */

/* One declared access of a direct launch: bytes [offset, offset + bytes) of
 * `buffer`; bytes 0 means "to the buffer's end". */
typedef struct sg_buffer_access {
  sg_buffer* buffer;
  size_t offset;
  size_t bytes;
  sg_access_mode mode;
} sg_buffer_access;

/* Enqueues the registered kernel `kernel` on `stream` as node `node` (NULL:
 * the kernel's name) with `threads` threads (cuda grid size; ignored on
 * host) and `count` accesses, which are the kernel's arguments in order
 * (Note [C kernels]: args[i] is accesses[i].buffer's base address). The
 * kernel's name is resolved now; a later sg_kernel_unregister does not
 * affect work already enqueued or captured. An unknown kernel, a dead
 * buffer handle, a range past a buffer's end or a buffer of another device
 * (device memory) is SG_INVALID_ARGUMENT and enqueues nothing. A non-zero
 * return of the host kernel is a device fault of the node: sticky for the
 * stream's device, reported by sg_stream_synchronize / sg_event_synchronize
 * as SG_DEVICE_FAULT. Capturable (the launch becomes a kernel node; each
 * replay calls the kernel again with the same buffers). The stream and the
 * graph keep the buffers alive until the work has run. */
SG_API sg_status sg_stream_launch(sg_stream* stream, const char* kernel, const char* node,
                                  const sg_buffer_access* accesses, size_t count, size_t threads);

typedef enum sg_capture_mode {
  SG_CAPTURE_GLOBAL = 0,                   /* cudaStreamCaptureModeGlobal */
  SG_CAPTURE_THREAD_LOCAL = 1,             /* cudaStreamCaptureModeThreadLocal (the C++ default) */
  SG_CAPTURE_RELAXED = 2,                  /* cudaStreamCaptureModeRelaxed */
  SG_CAPTURE_RANGE_MIN_ = -2147483647 - 1, /* not values: see sg_buffer_role */
  SG_CAPTURE_RANGE_MAX_ = 2147483647
} sg_capture_mode;

typedef enum sg_capture_status {
  SG_CAPTURE_NONE = 0,       /* not capturing */
  SG_CAPTURE_ACTIVE = 1,     /* capturing */
  SG_CAPTURE_INVALIDATED = 2 /* capturing, but a refused call invalidated it: end it */
} sg_capture_status;

/* Begins capturing `stream`: from now on the capturable calls on it are
 * recorded into a graph instead of run. A stream already capturing is
 * SG_INVALID_STATE; so is a device that faulted (sticky). */
SG_API sg_status sg_stream_begin_capture(sg_stream* stream, sg_capture_mode mode);
/* Ends the capture begun on `stream` and gives its graph; caller owns *out.
 * An invalidated capture, or a stream forked into the capture (through an
 * event) and not joined back, is SG_INVALID_STATE; the stream is then out
 * of capture and usable, and *out is untouched. A GLOBAL or THREAD_LOCAL
 * capture must be ended by the thread that began it (else SG_INVALID_STATE
 * and the capture goes on; cudaErrorStreamCaptureWrongThread): a caller whose
 * calls may move between threads (a goroutine) locks its thread for the
 * capture or captures in SG_CAPTURE_RELAXED mode. */
SG_API sg_status sg_stream_end_capture(sg_stream* stream, sg_graph** out);
SG_API sg_status sg_stream_capture_status(const sg_stream* stream, sg_capture_status* out);

/* The number of nodes of a captured graph. */
SG_API sg_status sg_graph_node_count(const sg_graph* graph, size_t* out);
/* Makes an executable graph (cudaGraphInstantiate); the graph stays usable
 * and may be instantiated again. A node the backend cannot instantiate is
 * SG_INVALID_STATE naming it. Not during a capture of the calling thread in
 * GLOBAL or THREAD_LOCAL mode. Caller owns *out. */
SG_API sg_status sg_graph_instantiate(const sg_graph* graph, sg_graph_exec** out);
/* Releases the graph. Executables made from it do not need it. */
SG_API sg_status sg_graph_release(sg_graph* graph);
/* Enqueues one run of the executable on `stream` (a stream of the graph's
 * device) and returns at once. Runs of one executable never overlap, on
 * whatever streams they are launched. Capturable (into another stream's
 * capture it becomes a child-graph node). A faulting kernel is a device
 * fault, as for sg_stream_launch. Thread-safe. */
SG_API sg_status sg_graph_exec_launch(const sg_graph_exec* exec, sg_stream* stream);
SG_API sg_status sg_graph_exec_node_count(const sg_graph_exec* exec, size_t* out);
/* Releases the executable; runs already enqueued still complete. */
SG_API sg_status sg_graph_exec_release(sg_graph_exec* exec);

/* ---------------------------------------------------------------- executor */

typedef enum sg_error_kind {
  SG_ERROR_DEVICE_FAULT = 0,
  SG_ERROR_TIMEOUT = 1,
  SG_ERROR_CANCELLED = 2,
  SG_ERROR_CALLBACK = 3,
  SG_ERROR_COLLECTIVE = 4
} sg_error_kind;

/* An asynchronous failure. The strings belong to the call that hands it out
 * (the callback: valid during the call). */
typedef struct sg_step_error {
  int64_t step;     /* -1 if unknown */
  const char* node; /* the faulting node, NULL if unknown (always known on host) */
  sg_error_kind kind;
  const char* message; /* never NULL */
} sg_step_error;

/* Called once per failure of the executor, on the executor's own thread
 * (never a worker, a CUDA thread, or the thread calling sg_executor_replay —
 * also when the fault surfaces while that call enqueues a step: the executor
 * posts it to its thread; runtime/src/executor.cpp, StepExecutor::replay).
 * It may read its argument (valid during the call) and call sg_last_error
 * and sg_status_string; any other function of this header called from it is
 * refused with SG_INVALID_STATE ("Capture" at the top of this header): an
 * sg_executor_release there would join the thread the callback runs on.
 * It must return (a C function: no exception, no longjmp out of it); hand
 * the error to another thread (a queue, a channel) to act on it. */
typedef void (*sg_error_callback)(const sg_step_error* error, void* user_data);

typedef enum sg_execution_mode {
  SG_MODE_GRAPH = 0,
  SG_MODE_EAGER = 1,
  SG_MODE_RANGE_MIN_ = -2147483647 - 1, /* not values: see sg_buffer_role */
  SG_MODE_RANGE_MAX_ = 2147483647
} sg_execution_mode;
typedef enum sg_on_busy {
  SG_ON_BUSY_BLOCK = 0,
  SG_ON_BUSY_FAIL = 1,
  SG_ON_BUSY_RANGE_MIN_ = -2147483647 - 1, /* not values: see sg_buffer_role */
  SG_ON_BUSY_RANGE_MAX_ = 2147483647
} sg_on_busy;

typedef struct sg_executor_options {
  int device;                 /* default 0 */
  int warmup;                 /* eager steps before capture; default 3 */
  int max_in_flight;          /* slots; default 2 */
  int launch_ahead;           /* replays handed to the device at once; default 2 */
  sg_execution_mode mode;     /* default SG_MODE_GRAPH */
  sg_on_busy on_busy;         /* no free slot: block (default) or SG_INVALID_STATE */
  uint32_t deadline_ms;       /* per replay watchdog; 0 = none (default) */
  sg_error_callback on_error; /* may be NULL */
  void* on_error_user_data;
} sg_executor_options;

/* Fills the defaults above. */
SG_API sg_status sg_executor_options_init(sg_executor_options* options);

typedef enum sg_executor_state {
  SG_EXECUTOR_CREATED = 0,
  SG_EXECUTOR_WARMING_UP = 1,
  SG_EXECUTOR_CAPTURED = 2,
  SG_EXECUTOR_READY = 3,
  SG_EXECUTOR_FAILED = 4,
  SG_EXECUTOR_CLOSED = 5
} sg_executor_state;

/* Makes an executor on `backend` for the step `desc` (copied; the desc may be
 * released at once). options NULL: the defaults. Checks every launch now:
 * kernel registered, buffer declared (or SG_SCALARS_BUFFER), range inside the
 * buffer, else SG_INVALID_ARGUMENT naming the launch. Caller owns *out. */
SG_API sg_status sg_executor_create(sg_backend* backend, const sg_step_desc* desc, const sg_executor_options* options,
                                    sg_executor** out);
/* Allocates, warms up (`warmup` real steps on slot 0's inputs as they are),
 * captures and instantiates. Optional: the first replays do it otherwise. */
SG_API sg_status sg_executor_prepare(sg_executor* executor);
/* A free slot's inputs. With none free: blocks, or SG_INVALID_STATE with
 * SG_ON_BUSY_FAIL. A failed executor: SG_INVALID_STATE naming the step and
 * the cause. Caller owns *out: hand it to sg_executor_replay, or release it. */
SG_API sg_status sg_executor_acquire_inputs(sg_executor* executor, sg_inputs** out);
/* The host address and size of the slot's pinned input `name`, to fill
 * before sg_executor_replay (zero copy: the step reads it in place). */
SG_API sg_status sg_inputs_ptr(const sg_inputs* inputs, const char* name, void** ptr, size_t* bytes);
/* Gives the slot back unused. */
SG_API sg_status sg_inputs_release(sg_inputs* inputs);
/* Starts one step on the slot's inputs and returns at once. `inputs` is
 * consumed (released) whatever the outcome. Caller owns *out: release it
 * with sg_replay_release, which also gives the slot back. */
SG_API sg_status sg_executor_replay(sg_executor* executor, sg_inputs* inputs, sg_replay** out);
/* Waits for every replay handed out so far. SG_DEVICE_FAULT / SG_TIMEOUT if
 * the executor failed. */
SG_API sg_status sg_executor_synchronize(sg_executor* executor);
/* Seen by the next replay (through SG_SCALARS_BUFFER). */
SG_API sg_status sg_executor_set_learning_rate(sg_executor* executor, float learning_rate);
/* Copies a state buffer from/to the host; bytes must equal its size. Not
 * while a replay runs (call sg_executor_synchronize first). */
SG_API sg_status sg_executor_write_state(sg_executor* executor, const char* name, const void* data, size_t bytes);
SG_API sg_status sg_executor_read_state(sg_executor* executor, const char* name, void* data, size_t bytes);
SG_API sg_status sg_executor_get_state(const sg_executor* executor, sg_executor_state* out);
/* *failed = 1 and *error filled if the executor failed, else *failed = 0.
 * error's strings stay valid until the calling thread's next call of this
 * function. */
SG_API sg_status sg_executor_failure(const sg_executor* executor, int* failed, sg_step_error* error);
/* Cancels queued replays, waits for the rest, stops the thread, frees the
 * memory. Later calls: SG_INVALID_STATE. Bounded after a failure. */
SG_API sg_status sg_executor_close(sg_executor* executor);
/* Closes (if not yet) and releases the handle. */
SG_API sg_status sg_executor_release(sg_executor* executor);

/* ------------------------------------------------------------------ replay */

typedef enum sg_replay_status {
  SG_REPLAY_QUEUED = 0,
  SG_REPLAY_RUNNING = 1,
  SG_REPLAY_DONE = 2,
  SG_REPLAY_FAILED = 3,
  SG_REPLAY_CANCELLED = 4,
  SG_REPLAY_CLOSED = 5
} sg_replay_status;

SG_API sg_status sg_replay_step(const sg_replay* replay, int64_t* out);
SG_API sg_status sg_replay_status_get(const sg_replay* replay, sg_replay_status* out);
/* *done = 1 once the replay has finished (done, failed or cancelled). */
SG_API sg_status sg_replay_poll(const sg_replay* replay, int* done);
/* Waits up to timeout_ms (< 0: forever). Returns SG_OK when it is done,
 * SG_TIMEOUT past the timeout, SG_DEVICE_FAULT / SG_TIMEOUT (watchdog) when it
 * failed, SG_INVALID_STATE when cancelled or closed; *out (may be NULL)
 * gets the status in every case. */
SG_API sg_status sg_replay_wait(sg_replay* replay, int64_t timeout_ms, sg_replay_status* out);
/* *has_error = 1 and *error filled if the replay failed or was cancelled;
 * error's strings are valid until sg_replay_release. */
SG_API sg_status sg_replay_error(sg_replay* replay, int* has_error, sg_step_error* error);
/* The host address and size of the slot's pinned output `name`, valid until
 * sg_replay_release. Read it after the replay is done. */
SG_API sg_status sg_replay_output(const sg_replay* replay, const char* name, const void** ptr, size_t* bytes);
/* Gives the slot back (its outputs may be overwritten from now on) and
 * releases the handle. Every replay handle must be released. */
SG_API sg_status sg_replay_release(sg_replay* replay);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* STEPGRAPH_C_STEPGRAPH_H */
