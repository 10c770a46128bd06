package testutil

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Server is what Serve runs: a chatserver server (an interface, so that the
// server's own tests can use this package without an import cycle).
type Server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// Serve runs srv on ln and returns stop, which shuts it down (within 10 s)
// and fails the test if Shutdown or Serve returned an error. A test that
// restarts a server on the same address calls stop, listens again and
// serves a new server there. stop runs once (a second call does nothing),
// and at the test's end if the test did not call it.
func Serve(t testing.TB, srv Server, ln net.Listener) (stop func()) {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	stop = sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		// ErrServerClosed: stop came before Serve began (a test that
		// skips right after starting its server), which is not a failure.
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	t.Cleanup(stop)
	return stop
}
