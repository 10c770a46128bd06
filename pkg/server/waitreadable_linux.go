//go:build linux && (amd64 || arm64)

package server

import (
	"errors"
	"syscall"
	"unsafe"
)

// peekBuilt says whether readable peeks at the socket on this platform.
const peekBuilt = true

// readable returns when the client has sent something other than a pong or
// a ping: a frame for ReadMessage, an error, or the end of the connection.
// Pongs that arrive while gorilla has nothing buffered are read and handled
// here (onPong), and so are pings when onPing is not nil (it gets a ping's
// payload, to send back in a pong, as gorilla's default ping handler does;
// its error ends the wait); then the wait goes on. With wait false it does
// not wait for the socket but returns errIdle when nothing is there (see
// idlePoller). An expired read deadline or a closed connection is returned as
// the error.
//
// It exists for the reader's stack, and since the idle poller for its
// goroutine. A connection is idle most of its life, and a goroutine parked
// deep in ReadMessage (gorilla, bufio, net, poll) needs a 4 KB stack, while
// one parked here fits in the minimum 2 KB (and with the poller none is
// parked at all); a stack, once grown, is not shrunk back while its
// goroutine parks this deep. gorilla handles control frames only inside
// ReadMessage, so an idle member would otherwise enter it at the first pong
// (after ping_interval) and stay there.
//
// Frames are only peeked at until one is known to be a complete pong or
// ping, so a frame that is not one is left whole for gorilla. Without a raw
// socket (TLS) it returns at once.
func (b *batchConn) readable(onPong func(), onPing func([]byte) error, wait bool) error {
	if b.raw == nil || b.br == nil {
		return nil
	}
	for b.br.Buffered() == 0 { // gorilla is between frames, with nothing read ahead
		var op byte
		var payload []byte
		empty := false
		var rerr error
		err := b.raw.Read(func(fd uintptr) bool {
			op, payload, rerr = takeControl(int(fd), onPing != nil)
			empty = errors.Is(rerr, syscall.EAGAIN)
			return !empty || !wait
		})
		switch {
		case err != nil:
			return err // deadline, or closed
		case empty:
			return errIdle
		case rerr != nil || op == 0:
			return nil // ReadMessage reads the frame, or reports the error
		case op == opPong:
			onPong()
		default:
			if err := onPing(payload); err != nil {
				return err
			}
		}
	}
	return nil
}

// Control frames the reader may take off the socket (RFC 6455 §5.5).
const (
	opPing = 0x9
	opPong = 0xA
)

// takeControl reads a pong frame, or with pings a ping frame, from socket fd
// if one is there whole, and reports which (op, 0 for none) and a ping's
// payload, unmasked; anything else stays unread. EAGAIN: nothing to read.
func takeControl(fd int, pings bool) (op byte, payload []byte, err error) {
	var hdr [2]byte
	n, err := recv(fd, hdr[:], syscall.MSG_PEEK)
	if err != nil || n < len(hdr) {
		return 0, nil, err
	}
	size, op, ok := controlSize(hdr)
	if !ok || op == opPing && !pings {
		return 0, nil, nil
	}
	frame := make([]byte, size) // off the stack, which must stay small
	if n, err = recv(fd, frame, syscall.MSG_PEEK); err != nil || n < size {
		return 0, nil, nil // not all there yet: ReadMessage waits for it
	}
	if n, err = recv(fd, frame, 0); err != nil || n != size {
		return 0, nil, errControlRead
	}
	if op == opPing {
		key := frame[2:6]
		payload = frame[6:]
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return op, payload, nil
}

var errControlRead = errors.New("websocket: a peeked control frame could not be read")

// recv is recv(2) with MSG_DONTWAIT added to flags. It calls the system
// directly because syscall.Recvfrom's frame (it converts a source address)
// would, on its own, grow the reader's stack past its minimum.
func recv(fd int, p []byte, flags int) (int, error) {
	// Raw: the call never blocks (MSG_DONTWAIT), so the scheduler need not
	// know about it.
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd),
		uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)),
		uintptr(flags|syscall.MSG_DONTWAIT), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// controlSize reports whether a frame header (its first two bytes) starts a
// client's ping or pong (RFC 6455 §5.2, §5.5: FIN, no RSV bits, masked,
// payload of at most 125 bytes), which one (op), and the whole frame's size:
// header, mask key and payload.
func controlSize(hdr [2]byte) (size int, op byte, ok bool) {
	const fin, masked, lenMask = 0x80, 0x80, 0x7F
	op = hdr[0] &^ fin
	if hdr[0]&fin == 0 || op != opPing && op != opPong || hdr[1]&masked == 0 || int(hdr[1]&lenMask) > 125 {
		return 0, 0, false
	}
	return 2 + 4 + int(hdr[1]&lenMask), op, true
}
