// runtime/src/deferred_release.h — one runtime thread that destroys what
// must not be destroyed where it became unused. Private to the runtime.
//
// Note [Deferred release]
// Two kinds of objects are handed over:
//  - the closure of an eager host function, which CUDA runs on its own
//    callback thread: a host function "must not make any CUDA API calls"
//    (CUDA Runtime API, cudaLaunchHostFunc), yet the closure's destructor may
//    drop the last reference to a Buffer (cudaFree), an Event or a GraphExec;
//  - resources that work still running on a device may use (an executable's
//    buffers, an executor's arena after a watchdog timeout): cudaFree,
//    cudaHostUnregister and cudaEventSynchronize wait for that work, and work
//    that never finishes (a kernel spinning on a flag, a collective whose peer
//    died) would block the destructor forever (DESIGN 1.6: nothing hangs
//    forever).
// The thread destroys each object once its `done` probe says the work is
// over; an object whose work never finishes is never destroyed: a deliberate
// leak rather than a hang, logged when it is handed over.
//
// Ownership: the releaser owns what it is given until it destroys it.
// Thread-safety: every function may be called from any thread, CUDA's
// callback thread included (they make no CUDA call and never wait for device
// work). Capture: no CUDA call; safe during stream capture.
// Lifetime: the thread lives until the process exits; objects still pending
// then are not destroyed (their device work has not finished).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

namespace stepgraph::runtime::detail {

/// Destroys `object` on the release thread once `done()` returns true
/// (polled from 1 ms, backing off to 100 ms); an empty `done` means at once.
/// `done` runs on the release thread; if it throws, the work is taken as
/// over (a device fault ends all work of the device).
void release_when(std::shared_ptr<void> object, std::function<bool()> done);

}  // namespace stepgraph::runtime::detail
