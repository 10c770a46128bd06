package server_test

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// The idle reader (fast_paths.idle_reader) waits for the socket outside
// gorilla and must never wait while gorilla holds unread bytes: it looks at
// the read buffer it handed gorilla (hijacker.Hijack), so it works only while
// gorilla reads through that buffer. Frames that arrive together — two
// messages in one segment, a pong and a message, a message bigger than the
// buffer and one after it — are read ahead by gorilla; if gorilla stopped
// reading through our buffer (its Upgrade takes a hijacked reader only under
// conditions of its own), the reader would wait on an empty socket with a
// message already read, and the echo below would never come. Run with
// CHATSERVER_FAST_PATHS_IDLE_READER=false (make test does) it checks the
// plain gorilla reader the same way.
func TestReaderMissesNothingGorillaReadAhead(t *testing.T) {
	body := func(s string) []byte { return fmt.Appendf(nil, `{"body":%q}`, s) }
	long := strings.Repeat("L", 700) // more than the 512-byte read buffer
	tests := []struct {
		name   string
		writes [][]byte // each one write on the client's socket
		want   []string // the bodies echoed back, in order
	}{
		{"two messages in one write",
			[][]byte{cat(masked(opText, body("one")), masked(opText, body("two")))}, []string{"one", "two"}},
		{"a pong and a message in one write",
			[][]byte{cat(masked(opPong, nil), masked(opText, body("three")))}, []string{"three"}},
		{"a message and a pong, then a message",
			[][]byte{cat(masked(opText, body("four")), masked(opPong, []byte("p"))), masked(opText, body("five"))},
			[]string{"four", "five"}},
		{"a message bigger than the buffer and one after it in one write",
			[][]byte{cat(masked(opText, body(long)), masked(opText, body("six")))}, []string{long, "six"}},
		{"three pongs and two messages in one write",
			[][]byte{cat(masked(opPong, nil), masked(opPong, nil), masked(opText, body("seven")),
				masked(opPong, nil), masked(opText, body("eight")))}, []string{"seven", "eight"}},
	}
	s := startServer(t, fastLimits)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := joined(t, s, "")
			raw := c.conn.UnderlyingConn()
			for _, w := range tt.writes {
				if _, err := raw.Write(w); err != nil {
					t.Fatal(err)
				}
			}
			for _, want := range tt.want {
				if got := c.next("message").Body; got != want {
					t.Fatalf("echo %q, want %q", got, want)
				}
			}
		})
	}
}

const (
	opText = 0x1
	opPong = 0xA
)

// masked is one client frame (FIN, masked with a fixed key).
func masked(op byte, payload []byte) []byte {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	b := []byte{0x80 | op, 0}
	switch n := len(payload); {
	case n < 126:
		b[1] = 0x80 | byte(n)
	case n <= 0xffff:
		b[1] = 0x80 | 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] = 0x80 | 127
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

func cat(frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = append(b, f...)
	}
	return b
}
