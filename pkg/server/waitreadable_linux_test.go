//go:build linux && (amd64 || arm64)

package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestControlSize(t *testing.T) {
	tests := []struct {
		name string
		hdr  [2]byte
		size int
		op   byte
		ok   bool
	}{
		{"masked pong, empty", [2]byte{0x8A, 0x80}, 6, opPong, true},
		{"masked pong, 125 bytes", [2]byte{0x8A, 0x80 | 125}, 131, opPong, true},
		{"masked ping, 4 bytes", [2]byte{0x89, 0x84}, 10, opPing, true},
		{"pong with a 16-bit length", [2]byte{0x8A, 0x80 | 126}, 0, 0, false},
		{"unmasked pong", [2]byte{0x8A, 4}, 0, 0, false},
		{"unmasked ping", [2]byte{0x89, 4}, 0, 0, false},
		{"pong without FIN", [2]byte{0x0A, 0x84}, 0, 0, false},
		{"pong with RSV1", [2]byte{0xCA, 0x84}, 0, 0, false},
		{"ping with RSV1", [2]byte{0xC9, 0x84}, 0, 0, false},
		{"text", [2]byte{0x81, 0x84}, 0, 0, false},
		{"close", [2]byte{0x88, 0x82}, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size, op, ok := controlSize(tt.hdr)
			if size != tt.size || op != tt.op || ok != tt.ok {
				t.Errorf("controlSize(%#x) = %d, %#x, %v; want %d, %#x, %v", tt.hdr, size, op, ok, tt.size, tt.op, tt.ok)
			}
		})
	}
}

// takeControl on a real socket: a whole pong (or, when asked, ping) is
// consumed and nothing after it, a ping's payload unmasked; anything else (a
// partial frame, a data frame, a ping not asked for) is left for gorilla,
// byte for byte.
func TestTakeControl(t *testing.T) {
	pong := []byte{0x8A, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	ping := []byte{0x89, 0x83, 1, 2, 3, 4, 'y' ^ 1, 'o' ^ 2, '!' ^ 3}
	text := []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	tests := []struct {
		name    string
		sent    []byte
		pings   bool
		op      byte
		payload string
		left    []byte
		err     error
	}{
		{"nothing", nil, true, 0, "", nil, syscall.EAGAIN},
		{"a pong", pong, false, opPong, "", nil, nil},
		{"a pong, then text", cat(pong, text), true, opPong, "", text, nil},
		{"half a pong", pong[:4], true, 0, "", pong[:4], nil},
		{"one byte", pong[:1], true, 0, "", pong[:1], nil},
		{"text", text, true, 0, "", text, nil},
		{"a ping", ping, true, opPing, "yo!", nil, nil},
		{"a ping, then text", cat(ping, text), true, opPing, "yo!", text, nil},
		{"half a ping", ping[:7], true, 0, "", ping[:7], nil},
		{"a ping not asked for", ping, false, 0, "", ping, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := tcpPair(t)
			if len(tt.sent) > 0 {
				if _, err := client.Write(tt.sent); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond) // delivered on loopback
			}
			raw, err := server.(*net.TCPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var op byte
			var payload []byte
			var terr error
			if err := raw.Control(func(fd uintptr) { op, payload, terr = takeControl(int(fd), tt.pings) }); err != nil {
				t.Fatal(err)
			}
			if op != tt.op || string(payload) != tt.payload || terr != tt.err { //nolint:errorlint // an errno is returned as is
				t.Fatalf("takeControl = %#x, %q, %v; want %#x, %q, %v", op, payload, terr, tt.op, tt.payload, tt.err)
			}
			_ = client.Close()
			left, _ := io.ReadAll(server)
			if !bytes.Equal(left, tt.left) {
				t.Errorf("left unread %q, want %q", left, tt.left)
			}
		})
	}
}

// readable, waiting, on a real socket, as the reader uses it: pongs are handled
// (onPong) and consumed, and it returns, with the bytes intact for gorilla,
// at the first thing that is not a whole pong — a text frame, or a pong
// whose rest has not arrived; a read deadline ends the wait with a timeout.
func TestWaitReadable(t *testing.T) {
	pong := []byte{0x8A, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	text := []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	tests := []struct {
		name  string
		sent  []byte
		pongs int
		next  []byte // what gorilla reads next
	}{
		{"two pongs, then text", cat(pong, pong, text), 2, text},
		{"text at once", text, 0, text},
		{"a pong, then half a pong", cat(pong, pong[:3]), 1, pong[:3]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, b := hijacked(t, 5*time.Second)
			if _, err := client.Write(tt.sent); err != nil {
				t.Fatal(err)
			}
			pongs := 0
			if err := b.readable(func() { pongs++ }, nil, true); err != nil {
				t.Fatal(err)
			}
			if pongs != tt.pongs {
				t.Errorf("%d pongs handled, want %d", pongs, tt.pongs)
			}
			got := make([]byte, len(tt.next))
			if _, err := io.ReadFull(b.br, got); err != nil || !bytes.Equal(got, tt.next) {
				t.Errorf("next bytes %q (%v), want %q", got, err, tt.next)
			}
		})
	}
	t.Run("nothing sent: the deadline ends the wait", func(t *testing.T) {
		_, b := hijacked(t, 50*time.Millisecond)
		err := b.readable(func() { t.Error("a pong out of nothing") }, nil, true)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("got %v, want a timeout", err)
		}
	})
	t.Run("a pong split over two writes is taken whole", func(t *testing.T) {
		client, b := hijacked(t, 5*time.Second)
		if _, err := client.Write(pong[:4]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		// Half a pong: the wait returns and ReadMessage would read it; a
		// reader that is already waiting when the rest comes takes it whole.
		if err := b.readable(func() { t.Error("half a pong handled") }, nil, true); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Write(append(pong[4:], text...)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		pongs := 0
		if err := b.readable(func() { pongs++ }, nil, true); err != nil {
			t.Fatal(err)
		}
		if pongs != 1 {
			t.Fatalf("%d pongs handled, want 1", pongs)
		}
		got := make([]byte, len(text))
		if _, err := io.ReadFull(b.br, got); err != nil || !bytes.Equal(got, text) {
			t.Errorf("next bytes %q (%v), want %q", got, err, text)
		}
	})
}

// hijacked is a batchConn set up as Hijack sets one up, on the server end of
// a loopback pair whose reads time out after timeout, and the client end.
func hijacked(t *testing.T, timeout time.Duration) (net.Conn, *batchConn) {
	t.Helper()
	client, server := tcpPair(t)
	b := &batchConn{Conn: server}
	b.raw, _ = server.(*net.TCPConn).SyscallConn()
	b.br = bufio.NewReaderSize(b, readBufferSize)
	_ = server.SetReadDeadline(time.Now().Add(timeout))
	return client, b
}
