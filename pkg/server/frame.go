package server

import (
	"encoding/binary"
	"sync"

	"github.com/gorilla/websocket"
)

// outFrame is one server → client text message, encoded once and shared by
// every client it is queued to.
//
// wire holds the complete uncompressed WebSocket frame (header and payload;
// server frames are not masked), which a client's writer appends to its batch
// as is: no per-delivery encoding, locking or allocation. Clients that
// negotiated permessage-deflate need the compressed form instead; it is made
// on first use, once per message, by a gorilla PreparedMessage.
type outFrame struct {
	wire []byte
	once sync.Once
	pm   *websocket.PreparedMessage
	err  error
}

// newOutFrame encodes payload as one unfragmented text frame.
func newOutFrame(payload []byte) *outFrame {
	n := len(payload)
	var b []byte
	switch {
	case n < 126:
		b = make([]byte, 2, 2+n)
		b[1] = byte(n)
	case n <= 0xffff:
		b = make([]byte, 4, 4+n)
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = make([]byte, 10, 10+n)
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	b[0] = 0x80 | websocket.TextMessage // FIN, text
	return &outFrame{wire: append(b, payload...)}
}

// payload is the message without the frame header.
func (f *outFrame) payload() []byte {
	switch f.wire[1] {
	case 126:
		return f.wire[4:]
	case 127:
		return f.wire[10:]
	}
	return f.wire[2:]
}

// prepared is the message as a PreparedMessage, for compressing clients.
func (f *outFrame) prepared() (*websocket.PreparedMessage, error) {
	f.once.Do(func() {
		f.pm, f.err = websocket.NewPreparedMessage(websocket.TextMessage, f.payload())
	})
	return f.pm, f.err
}
