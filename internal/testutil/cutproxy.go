package testutil

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
)

// CutProxy forwards TCP connections to a server until Cut, which closes them
// all and refuses new ones until Resume: a network that drops, for clients
// whose reconnects and recovery a test checks. It stops with the test.
type CutProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	isCut bool
	// flakyAfter, when set, ends each new connection right after a chunk
	// from the server containing it went through (see SetFlaky).
	flakyAfter []byte
	conns      map[net.Conn]struct{}
	wg         sync.WaitGroup
}

// NewCutProxy listens on a free loopback port and forwards to target.
func NewCutProxy(t testing.TB, target string) *CutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &CutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's HOST:PORT.
func (p *CutProxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every forwarded connection and refuses new ones.
func (p *CutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = true
	for c := range p.conns {
		_ = c.Close()
	}
}

// Resume accepts connections again.
func (p *CutProxy) Resume() {
	p.mu.Lock()
	p.isCut = false
	p.mu.Unlock()
}

// SetFlaky makes each new connection end right after the server sent a
// chunk containing marker (e.g. `"type":"history"`: a connection that gets
// ready and drops at once); nil turns it off.
func (p *CutProxy) SetFlaky(marker []byte) {
	p.mu.Lock()
	p.flakyAfter = marker
	p.mu.Unlock()
}

func (p *CutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.isCut {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.wg.Add(2)
		marker := p.flakyAfter
		p.mu.Unlock()
		go p.pipe(c, up, marker)
		go p.pipe(up, c, nil)
	}
}

// pipe copies src to dst, until marker went through when it is set, then
// closes both.
func (p *CutProxy) pipe(dst, src net.Conn, marker []byte) {
	defer p.wg.Done()
	if marker == nil {
		_, _ = io.Copy(dst, src)
	} else {
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil || bytes.Contains(buf[:n], marker) {
					break
				}
			}
			if err != nil {
				break
			}
		}
	}
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}
