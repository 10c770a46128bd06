//go:build linux && (amd64 || arm64)

package server

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// idlePoller lets idle connections wait for their next frame without a
// goroutine (fast_paths.idle_poller). A goroutine costs an idle connection
// its 2 KB stack and ~0.5 KB of runtime state, about half of what the
// connection costs in all once the garbage collector's headroom over both is
// counted (BENCHMARKS.md, "Memory per idle connection"). So a reader that
// finds its socket empty arms the socket in an epoll instance of ours and
// returns; when the socket becomes readable (or is closed, see
// batchConn.Close) a new reader goroutine picks up where it left off.
//
// The epoll instance is itself waited on by Go's netpoller (an epoll file
// descriptor is readable while events are ready), so the poller's one
// goroutine parks like any other reader and no thread blocks in epoll_wait.
// Sockets are armed one-shot: an event is delivered once, and the reader
// that handles it arms the socket again when it next finds it empty.
type idlePoller struct {
	ep   *os.File // the epoll instance
	rc   syscall.RawConn
	done chan struct{} // closed when run returns
	// failed is called if run stops before close: an epoll error. The
	// poller then closes itself and wakes every parked reader, which, its
	// socket refused (arm fails), waits in its goroutine from then on.
	failed func(error)
	closed atomic.Bool // by close or fail: arm refuses (errPollerClosed)

	mu    sync.Mutex
	conns map[uint64]*batchConn // by key: armed at least once, not yet closed
	next  uint64
}

// pollerBuilt says whether the idle poller is built on this platform.
const pollerBuilt = true

func newIdlePoller(failed func(error)) (*idlePoller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("idle poller: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("idle poller: %w", err)
	}
	ep := os.NewFile(uintptr(fd), "idle-poller") // non-blocking: Go's netpoller waits on it
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("idle poller: %w", err)
	}
	p := &idlePoller{ep: ep, rc: rc, done: make(chan struct{}), failed: failed, conns: make(map[uint64]*batchConn)}
	go p.run()
	return p, nil
}

// run hands each ready socket back to its reader (batchConn.wake) until
// the poller is closed.
func (p *idlePoller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n := 0
		var werr error
		err := p.rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			return n > 0 || werr != nil // false: none ready, wait for the next
		})
		switch {
		case errors.Is(werr, unix.EINTR):
			continue
		case p.closed.Load():
			return // close
		case err != nil || werr != nil:
			p.fail(errors.Join(err, werr))
			return
		}
		for _, ev := range events[:n] {
			p.mu.Lock()
			b := p.conns[eventKey(ev)]
			p.mu.Unlock()
			if b != nil {
				b.wake()
			}
		}
	}
}

// fail ends a poller that can no longer deliver events: nothing parks in it
// any more (arm fails once ep is closed), and every reader parked in it is
// woken (see failed).
func (p *idlePoller) fail(err error) {
	p.closed.Store(true)
	_ = p.ep.Close()
	p.failed(err)
	p.mu.Lock()
	parked := make([]*batchConn, 0, len(p.conns))
	for _, b := range p.conns {
		parked = append(parked, b)
	}
	p.mu.Unlock()
	for _, b := range parked {
		b.wake()
	}
}

// eventKey and setEventKey keep a connection's key in the event's 64 bits
// of user data (the Fd and Pad fields of x/sys's EpollEvent).
func eventKey(ev unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

func setEventKey(ev *unix.EpollEvent, key uint64) {
	ev.Fd, ev.Pad = int32(uint32(key)), int32(uint32(key>>32)) //nolint:gosec // G115: bits, not numbers
}

// register gives b its key, once, before its reader first parks.
func (p *idlePoller) register(b *batchConn) {
	if b.pollKey != 0 {
		return
	}
	p.mu.Lock()
	p.next++
	b.pollKey = p.next
	p.conns[b.pollKey] = b
	p.mu.Unlock()
}

// arm registers b's socket for one readiness event. The caller has marked b
// parked; the event (or b's Close) wakes it. Both file descriptors are held
// (Control) while epoll_ctl runs, so neither can be closed and its number
// reused under the call. Two readers of one connection may arm it at once
// (one parking, the next stint parking again): the second ADD finds EEXIST.
func (p *idlePoller) arm(b *batchConn) error {
	if p.closed.Load() {
		return errPollerClosed
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setEventKey(&ev, b.pollKey)
	var cerr error
	err := p.rc.Control(func(epfd uintptr) {
		err := b.raw.Control(func(fd uintptr) {
			cerr = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_MOD, int(fd), &ev)
			if errors.Is(cerr, unix.ENOENT) { // the first time
				cerr = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_ADD, int(fd), &ev)
				if errors.Is(cerr, unix.EEXIST) {
					cerr = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_MOD, int(fd), &ev)
				}
			}
		})
		if cerr == nil {
			cerr = err
		}
	})
	if err != nil {
		return err
	}
	return cerr
}

// forget drops b (registered) at the end of its connection. Its socket is
// closed by then, which took it out of the epoll set.
func (p *idlePoller) forget(b *batchConn) {
	p.mu.Lock()
	delete(p.conns, b.pollKey)
	p.mu.Unlock()
}

// close stops the poller and waits for its goroutine.
func (p *idlePoller) close() error {
	if p.closed.Swap(true) { // failed: closed already
		<-p.done
		return nil
	}
	err := p.ep.Close()
	<-p.done
	return err
}
