package bench

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// wsConn is a minimal WebSocket client, just enough for load generation: it
// handshakes, reads server frames (text, continuation, ping, close, and
// permessage-deflate without context takeover, the only mode gorilla speaks),
// and writes masked text frames. It costs one bufio.Reader and one growing
// payload buffer per connection, so thousands fit on the generator's one core.
//
// One goroutine reads (readFrame); writes are serialised by wmu because a
// publisher's reader answers pings while its sender writes.
type wsConn struct {
	nc       net.Conn
	rc       readCounter // what br reads from: nc, counting the reads
	br       *bufio.Reader
	payload  []byte // the current message, reused
	deflated bool   // permessage-deflate was negotiated
	fr       io.ReadCloser
	inflated bytes.Buffer

	wmu  sync.Mutex
	wbuf []byte

	// joined is how long this connection took from its dial to its history
	// frame (set by dialAll): one member's join time.
	joined time.Duration
}

// dialOptions tune dialWS.
type dialOptions struct {
	readBuffer int    // bufio.Reader size; 0: 4096
	compress   bool   // offer permessage-deflate
	localIP    net.IP // source address (nil: the kernel's choice)
	timeout    time.Duration
}

// dialWS connects to the ws:// URL u and completes the handshake.
func dialWS(u *url.URL, o dialOptions) (*wsConn, error) {
	if o.timeout == 0 {
		o.timeout = 10 * time.Second
	}
	d := net.Dialer{Timeout: o.timeout}
	if o.localIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: o.localIP}
	}
	nc, err := d.Dial("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	c, err := handshake(nc, u, o)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func handshake(nc net.Conn, u *url.URL, o dialOptions) (*wsConn, error) {
	var key [16]byte
	_, _ = rand.Read(key[:])
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
		u.RequestURI(), u.Host, base64.StdEncoding.EncodeToString(key[:]))
	if o.compress {
		req.WriteString("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n")
	}
	req.WriteString("\r\n")
	_ = nc.SetDeadline(time.Now().Add(o.timeout))
	if _, err := io.WriteString(nc, req.String()); err != nil {
		return nil, err
	}
	size := o.readBuffer
	if size <= 0 {
		size = 4096
	}
	c := &wsConn{nc: nc, rc: readCounter{r: nc}}
	c.br = bufio.NewReaderSize(&c.rc, size)
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, fmt.Errorf("handshake: HTTP %d %s", resp.StatusCode, resp.Status)
	}
	_ = nc.SetDeadline(time.Time{})
	c.deflated = strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate")
	return c, nil
}

// Opcodes (RFC 6455 §5.2).
const (
	opText  = 1 // data frames of every opcode are read alike
	opClose = 8
	opPing  = 9
	opPong  = 10
)

// errClosed is returned by readMessage when the server sent a close frame.
type errClosed struct{ code int }

func (e errClosed) Error() string { return fmt.Sprintf("websocket closed by the server (%d)", e.code) }

// readMessage returns the next data message. The slice is valid until the
// next call. Pings are answered; a close frame ends with errClosed.
func (c *wsConn) readMessage() ([]byte, error) {
	if m, ok := c.peekMessage(); ok {
		return m, nil
	}
	c.payload = c.payload[:0]
	compressed := false
	first := true
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return nil, err
		}
		fin, op := h[0]&0x80 != 0, int(h[0]&0x0f)
		if h[1]&0x80 != 0 {
			return nil, errors.New("server frame is masked")
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(c.br, b[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(c.br, b[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		if n > 64<<20 {
			return nil, fmt.Errorf("frame of %d bytes is too big", n)
		}
		if op >= opClose { // control frame: never fragmented, at most 125 bytes
			var b [125]byte
			if _, err := io.ReadFull(c.br, b[:n]); err != nil {
				return nil, err
			}
			switch op {
			case opPing:
				if err := c.writeFrame(opPong, b[:n]); err != nil {
					return nil, err
				}
			case opClose:
				code := 1005
				if n >= 2 {
					code = int(binary.BigEndian.Uint16(b[:2]))
				}
				return nil, errClosed{code}
			}
			continue
		}
		if first {
			compressed = h[0]&0x40 != 0
			first = false
		}
		start := len(c.payload)
		c.payload = grow(c.payload, int(n))
		if _, err := io.ReadFull(c.br, c.payload[start:]); err != nil {
			return nil, err
		}
		if fin {
			break
		}
	}
	if compressed {
		return c.inflate()
	}
	return c.payload, nil
}

// peekMessage returns the next message without copying it when it is one
// whole frame in the read buffer — final, uncompressed, a data frame with a
// 7- or 16-bit length, as nearly every message the server sends is — and
// consumes it; the slice is the buffer's, valid until the next read.
// Anything else it leaves unread for readMessage's general path.
func (c *wsConn) peekMessage() ([]byte, bool) {
	h, err := c.br.Peek(2) // every frame has two bytes: this cannot wait for more than one
	if err != nil {
		return nil, false
	}
	const fin, rsv1, masked = 0x80, 0x40, 0x80
	if h[0]&(fin|rsv1) != fin || h[0]&0x0f >= opClose || h[0]&0x0f == 0 || h[1]&masked != 0 {
		return nil, false
	}
	size, n := 2, int(h[1])
	switch n {
	case 127:
		return nil, false
	case 126:
		if h, err = c.br.Peek(4); err != nil {
			return nil, false
		}
		size, n = 4, int(binary.BigEndian.Uint16(h[2:]))
	}
	f, err := c.br.Peek(size + n) // bufio.ErrBufferFull when bigger than the buffer
	if err != nil {
		return nil, false
	}
	_, _ = c.br.Discard(size + n)
	return f[size:], true
}

// readCounter counts the reads made on the connection: a message that was
// read without one arrived together with the one before it.
type readCounter struct {
	r io.Reader
	n uint64
}

func (rc *readCounter) Read(p []byte) (int, error) {
	rc.n++
	return rc.r.Read(p)
}

// deflateTail ends a permessage-deflate message (RFC 7692 §7.2.2) and adds an
// empty final block so the reader stops at the end of the message.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

func (c *wsConn) inflate() ([]byte, error) {
	src := io.MultiReader(bytes.NewReader(c.payload), bytes.NewReader(deflateTail))
	if c.fr == nil {
		c.fr = flate.NewReader(src)
	} else if err := c.fr.(flate.Resetter).Reset(src, nil); err != nil {
		return nil, err
	}
	c.inflated.Reset()
	if _, err := c.inflated.ReadFrom(c.fr); err != nil {
		return nil, fmt.Errorf("inflating: %w", err)
	}
	return c.inflated.Bytes(), nil
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// writeText sends one text frame.
func (c *wsConn) writeText(p []byte) error { return c.writeFrame(opText, p) }

// writeFrame sends one masked frame. The mask key is zero: masking exists to
// protect proxies from browser-made payloads and costs the generator a pass
// over every byte; RFC 6455 lets the server not care which key is used.
func (c *wsConn) writeFrame(op int, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := append(c.wbuf[:0], byte(0x80|op))
	switch n := len(p); {
	case n < 126:
		b = append(b, byte(0x80|n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, 0, 0, 0, 0) // mask key
	b = append(b, p...)
	c.wbuf = b
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(b)
	return err
}

// close sends a normal close frame and closes the connection.
func (c *wsConn) close() {
	_ = c.writeFrame(opClose, []byte{0x03, 0xe8})
	_ = c.nc.Close()
}
