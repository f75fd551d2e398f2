package stepgraph_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	sg "stepgraph.example/sg/stepgraph"
)

// Bad input is an *Error with the C status and a message naming the C call;
// a released object is an error, not a crash; Release twice is a no-op.
func TestBadInputIsAnErrorNamingTheCall(t *testing.T) {
	if _, err := sg.NewBackend("no-such-backend", 1); sg.StatusOf(err) != sg.InvalidArgument ||
		!strings.Contains(err.Error(), "sg_backend_create") {
		t.Fatalf("NewBackend(no-such-backend): %v, want SG_INVALID_ARGUMENT from sg_backend_create", err)
	}
	b, err := sg.NewBackend("host", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if _, err := b.AllocPinned(0); sg.StatusOf(err) != sg.InvalidArgument {
		t.Fatalf("AllocPinned(0): %v, want SG_INVALID_ARGUMENT", err)
	}
	buf, err := b.AllocPinned(64)
	if err != nil {
		t.Fatal(err)
	}
	if h := buf.Handle(); h>>63 != 1 {
		t.Fatalf("handle %#x: the top bit is not set (Note [Handle values] in stepgraph_c.cpp)", h)
	}
	if err := buf.Release(); err != nil {
		t.Fatal(err)
	}
	if err := buf.Release(); err != nil {
		t.Fatalf("a second Release: %v, want a no-op", err)
	}
	if _, err := buf.Float32s(); sg.StatusOf(err) != sg.InvalidArgument ||
		!strings.HasPrefix(err.(*sg.Error).Message, "sg_buffer_host_ptr: ") {
		t.Fatalf("Float32s after Release: %v, want SG_INVALID_ARGUMENT from sg_buffer_host_ptr", err)
	}
	if err := sg.UnregisterKernel("go.never-registered"); sg.StatusOf(err) != sg.InvalidArgument {
		t.Fatalf("UnregisterKernel: %v", err)
	}
}

// A capture whose function fails still ends the capture (the goroutine stays
// on its thread meanwhile), and the stream stays usable; an empty capture
// instantiates and launches.
func TestCaptureEndsWhenItsFunctionFails(t *testing.T) {
	b, err := sg.NewBackend("host", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	s, err := b.NewStream(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	buf, err := b.AllocPinned(16)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Release()
	_, err = s.Capture(sg.CaptureThreadLocal, func() error {
		return s.Launch("go.not-registered", "", []sg.BufferAccess{{Buffer: buf, Mode: sg.Write}}, 1)
	})
	if sg.StatusOf(err) != sg.InvalidArgument || !strings.Contains(err.Error(), "go.not-registered") {
		t.Fatalf("capture with an unknown kernel: %v, want SG_INVALID_ARGUMENT naming it", err)
	}
	g, err := s.Capture(sg.CaptureThreadLocal, func() error { return nil })
	if err != nil {
		t.Fatalf("the stream is not usable after a failed capture: %v", err)
	}
	defer g.Release()
	if n, err := g.NodeCount(); err != nil || n != 0 {
		t.Fatalf("empty capture: %d nodes, %v", n, err)
	}
	x, err := g.Instantiate()
	if err != nil {
		t.Fatal(err)
	}
	defer x.Release()
	if err := x.Launch(s); err != nil {
		t.Fatal(err)
	}
	if err := s.Synchronize(); err != nil {
		t.Fatal(err)
	}
}

// Objects dropped without Release: the finalizers release their C handles
// (a backend and four buffers).
func TestFinalizersReleaseTheCSide(t *testing.T) {
	before := sg.FinalizedCount()
	func() {
		b, err := sg.NewBackend("host", 1)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4; i++ {
			if _, err := b.AllocPinned(1 << 16); err != nil {
				t.Fatal(err)
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for sg.FinalizedCount()-before < 5 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if got := sg.FinalizedCount() - before; got < 5 {
		t.Fatalf("finalizers released %d handles, want 5", got)
	}
}
