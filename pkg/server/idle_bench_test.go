package server_test

import (
	"bufio"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/config"
)

// BenchmarkIdleConnections measures what an idle member costs the server in
// Go's own accounting: each iteration opens 500 connections into one room,
// each sends a pong (as an idle client does every ping_interval), and reports
// goroutine stack and heap bytes per connection once they are quiet (after
// GCs, which also shrink idle stacks). The clients are bare sockets that did
// a WebSocket handshake and read nothing, so that almost all of what is
// counted is the server's (their net.Conn, a few hundred bytes, is in the
// heap figure). Run it with GODEBUG=adaptivestackstart=0 (make bench does):
// new goroutines then start at 2 KB, as idle readers do in a server full of
// them, where the adaptive start follows their own average; in a test binary
// it would follow the test's goroutines. RSS per connection at 10,000
// connections is measured by `chatserver bench conns` (BENCHMARKS.md).
func BenchmarkIdleConnections(b *testing.B) {
	const conns = 500
	s := startServer(b, func(c *config.Config) {
		noLimits(c)
		c.WebSocket.PresenceLimit = 1 // no presence storm: each joiner gets only its own online
	})
	addr := strings.TrimPrefix(s.URL, "http://")
	var stack, heap uint64
	for b.Loop() {
		before := memstats()
		open := make([]net.Conn, 0, conns)
		for range conns {
			c := handshake(b, addr)
			if _, err := c.Write(maskedPong); err != nil {
				b.Fatal(err)
			}
			open = append(open, c)
		}
		time.Sleep(300 * time.Millisecond) // writers linger up to 100 ms
		after := memstats()
		stack += after.StackInuse - before.StackInuse
		heap += after.HeapInuse - before.HeapInuse
		for _, c := range open {
			_ = c.Close()
		}
		time.Sleep(300 * time.Millisecond) // the server notices and cleans up
	}
	n := float64(b.N * conns)
	b.ReportMetric(float64(stack)/n, "stack-B/conn")
	b.ReportMetric(float64(heap)/n, "heap-B/conn")
}

// maskedPong is a client's pong frame with a 4-byte payload.
var maskedPong = []byte{0x8A, 0x80 | 4, 1, 2, 3, 4, 'p' ^ 1, 'o' ^ 2, 'n' ^ 3, 'g' ^ 4}

func memstats() runtime.MemStats {
	for range 4 {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}

// handshake opens a WebSocket connection by hand and reads only the 101.
func handshake(b *testing.B, addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	_, err = c.Write([]byte("GET /chatsocket?room=idle HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
	if err != nil {
		b.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 512), nil)
	if err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b.Fatalf("handshake: %s", resp.Status)
	}
	return c
}
