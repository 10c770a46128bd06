package server

import (
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/config"
)

// newTestServer is a server with the embedded default config, changed by
// mutate, that never listens: its clients exist only in memory. It is closed
// when the test ends.
func newTestServer(tb testing.TB, mutate func(*config.Config)) *Server {
	tb.Helper()
	cfg, err := config.Load("", nil)
	if err != nil {
		tb.Fatal(err)
	}
	if mutate != nil {
		mutate(cfg)
	}
	s, err := New(cfg, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// benchServer is a server whose clients exist only in memory.
func benchServer(b *testing.B) *Server {
	return newTestServer(b, func(c *config.Config) {
		c.WebSocket.SendQueue = 1 << 30 // the benchmark drains queues itself
	})
}

func benchClient(s *Server, id int64, room string) *client {
	return newClient(s, id, room)
}

// a typical message envelope as broadcast (~450 bytes).
var benchFrame = []byte(`{"id":"0192f0c4-7e17-46eb-9f1e-11f5707ea0ec","type":"message","room":"bench","client_id":7,` +
	`"username":"alice","body":"hello, this is a forty byte message body","html":"<div class=\"message\" ` +
	`id=\"m0192f0c4-7e17-46eb-9f1e-11f5707ea0ec\" data-client=\"7\"><span class=\"meta\"><b ` +
	`class=\"user\">alice</b> <time datetime=\"2026-11-25 21:04:05\">2026-11-25 21:04:05` +
	`</time></span><span class=\"body\">hello, this is a forty byte message body` +
	`</span></div>","datetime":"2026-11-25 21:04:05","ts":1764104645123}`)

// BenchmarkHubDeliver fans one message out to 1,000 in-memory members: the
// work a publish costs the server before the writers run (frame encoding
// once, then one queue append and wake-up per member).
func BenchmarkHubDeliver(b *testing.B) {
	const members = 1000
	s := benchServer(b)
	clients := make([]*client, members)
	for i := range clients {
		clients[i] = benchClient(s, int64(i+1), "bench")
		s.hub.join(clients[i])
	}
	b.ReportAllocs()
	cpu := cpuTime()
	n := 0
	for b.Loop() {
		s.hub.deliver("bench", "id", benchFrame, true)
		if n++; n%64 == 0 { // drain, as writers would
			for _, c := range clients {
				c.mu.Lock()
				clear(c.queue)
				c.queue = c.queue[:0]
				c.mu.Unlock()
				select {
				case <-c.wake:
				default:
				}
			}
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N*members), "cpu-ns/delivery")
	b.ReportMetric(float64(b.Elapsed())/float64(b.N*members), "ns/delivery")
}

// BenchmarkClientWrite is a writer's side of a delivery: frames queued since
// it last woke, copied into one batch and written in one syscall (to
// /dev/null, so the kernel's TCP work is not counted).
func BenchmarkClientWrite(b *testing.B) {
	for _, batch := range []int{1, 16} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			s := benchServer(b)
			f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			c := benchClient(s, 1, "bench")
			c.bc = &batchConn{Conn: fileConn{f}, upgraded: true}
			q := queued{id: "id", f: newOutFrame(benchFrame)}
			frames := make([]queued, batch)
			for i := range frames {
				frames[i] = q
			}
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				if err := c.writeBatch(frames); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N*batch), "cpu-ns/delivery")
		})
	}
}

// fileConn is a net.Conn that writes to a file.
type fileConn struct{ f *os.File }

func (c fileConn) Read(p []byte) (int, error)         { return 0, os.ErrClosed }
func (c fileConn) Write(p []byte) (int, error)        { return c.f.Write(p) }
func (c fileConn) Close() error                       { return nil }
func (c fileConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c fileConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c fileConn) SetDeadline(time.Time) error        { return nil }
func (c fileConn) SetReadDeadline(time.Time) error    { return nil }
func (c fileConn) SetWriteDeadline(t time.Time) error { return nil }

// cpuTime is the CPU time this process has used: on a shared machine ns/op
// (wall time) includes waiting for a CPU, cpu-ns does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
