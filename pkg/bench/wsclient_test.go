package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// readMessage returns every message whole, whether it comes through the
// no-copy path (one whole frame in the buffer) or the general one (bigger
// than the buffer, fragmented, a 64-bit length, bytes that trickle in one
// at a time), and what peekMessage leaves, the general path reads intact.
func TestReadMessage(t *testing.T) {
	frame := func(first byte, payload string, lenBytes int) []byte {
		b := []byte{first}
		switch lenBytes {
		case 0:
			b = append(b, byte(len(payload)))
		case 2:
			b = append(b, 126)
			b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
		case 8:
			b = append(b, 127)
			b = binary.BigEndian.AppendUint64(b, uint64(len(payload)))
		}
		return append(b, payload...)
	}
	const fin, text, binaryOp, cont = 0x80, 0x1, 0x2, 0x0
	mid, big := strings.Repeat("m", 300), strings.Repeat("b", 5000)
	var stream []byte
	add := func(f ...[]byte) {
		for _, x := range f {
			stream = append(stream, x...)
		}
	}
	want := []string{"hello", "", mid, big, "x64", "one two three", "bin", "after"}
	add(frame(fin|text, "hello", 0), frame(fin|text, "", 0), frame(fin|text, mid, 2), frame(fin|text, big, 2),
		frame(fin|text, "x64", 8),
		frame(text, "one ", 0), frame(cont, "two ", 0), frame(fin|cont, "three", 0),
		frame(fin|binaryOp, "bin", 0), frame(fin|text, "after", 0))
	for name, src := range map[string]func() io.Reader{
		"whole":         func() io.Reader { return bytes.NewReader(stream) },
		"byte by byte":  func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half a buffer": func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
	} {
		t.Run(name, func(t *testing.T) {
			c := &wsConn{rc: readCounter{r: src()}}
			c.br = bufio.NewReaderSize(&c.rc, 512)
			for i, w := range want {
				m, err := c.readMessage()
				if err != nil || string(m) != w {
					t.Fatalf("message %d: %.20q (%d bytes), %v; want %.20q (%d bytes)", i, m, len(m), err, w, len(w))
				}
			}
			if _, err := c.readMessage(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the last message: %v, want EOF", err)
			}
		})
	}
}
