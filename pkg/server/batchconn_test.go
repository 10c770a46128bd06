package server

import (
	"bytes"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestPongSize(t *testing.T) {
	tests := []struct {
		name string
		hdr  [2]byte
		size int
		ok   bool
	}{
		{"masked pong, empty", [2]byte{0x8A, 0x80}, 6, true},
		{"masked pong, 125 bytes", [2]byte{0x8A, 0x80 | 125}, 131, true},
		{"pong with a 16-bit length", [2]byte{0x8A, 0x80 | 126}, 0, false},
		{"unmasked pong", [2]byte{0x8A, 4}, 0, false},
		{"pong without FIN", [2]byte{0x0A, 0x84}, 0, false},
		{"pong with RSV1", [2]byte{0xCA, 0x84}, 0, false},
		{"ping", [2]byte{0x89, 0x84}, 0, false},
		{"text", [2]byte{0x81, 0x84}, 0, false},
		{"close", [2]byte{0x88, 0x82}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size, ok := pongSize(tt.hdr)
			if size != tt.size || ok != tt.ok {
				t.Errorf("pongSize(%#x) = %d, %v; want %d, %v", tt.hdr, size, ok, tt.size, tt.ok)
			}
		})
	}
}

// takePong on a real socket: a whole pong is consumed and nothing after it;
// anything else (a partial pong, a data frame) is left for gorilla, byte for
// byte.
func TestTakePong(t *testing.T) {
	pong := []byte{0x8A, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	text := []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	tests := []struct {
		name string
		sent []byte
		took bool
		left []byte
		err  error
	}{
		{"nothing", nil, false, nil, syscall.EAGAIN},
		{"a pong", pong, true, nil, nil},
		{"a pong, then text", append(append([]byte{}, pong...), text...), true, text, nil},
		{"half a pong", pong[:4], false, pong[:4], nil},
		{"one byte", pong[:1], false, pong[:1], nil},
		{"text", text, false, text, nil},
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
			var took bool
			var terr error
			if err := raw.Control(func(fd uintptr) { took, terr = takePong(int(fd)) }); err != nil {
				t.Fatal(err)
			}
			if took != tt.took || terr != tt.err { //nolint:errorlint // an errno is returned as is
				t.Fatalf("takePong = %v, %v; want %v, %v", took, terr, tt.took, tt.err)
			}
			_ = client.Close()
			left, _ := io.ReadAll(server)
			if !bytes.Equal(left, tt.left) {
				t.Errorf("left unread %q, want %q", left, tt.left)
			}
		})
	}
}

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}
