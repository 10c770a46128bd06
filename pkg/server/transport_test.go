package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/server"
)

// serveOn runs a server through Server.Serve (the real http.Server, with its
// timeouts and TLS) on 127.0.0.1:0 and returns its address.
func serveOn(t *testing.T, mutate func(*config.Config)) (*server.Server, string) {
	t.Helper()
	srv := newServer(t, mutate, server.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv, ln.Addr().String()
}

// A slowloris client (headers that never end) is cut off after
// limits.handshake_timeout, and does not keep others out.
func TestSlowHandshakeTimesOut(t *testing.T) {
	_, addr := serveOn(t, func(c *config.Config) { c.Limits.HandshakeTimeout = 300 * time.Millisecond })
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, "GET /chatsocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"); err != nil {
		t.Fatal(err)
	}
	// Drip one more header line, too slowly to finish in time.
	time.Sleep(100 * time.Millisecond)
	_, _ = io.WriteString(conn, "X-Slow: 1\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(conn) // the server closes; nothing or an error status comes back
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v", time.Since(start))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v, want about 300ms", d)
	}

	// Meanwhile a real client gets in.
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/chatsocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.Close()
}

// A client that stops answering pings is closed after ping_interval +
// write_timeout; one that answers stays.
func TestIdleClientWithoutPongsIsClosed(t *testing.T) {
	s := startServer(t, func(c *config.Config) {
		c.WebSocket.PingInterval = 100 * time.Millisecond
		c.WebSocket.WriteTimeout = 100 * time.Millisecond
	})
	alive := joined(t, s, "")
	mute := joined(t, s, "")
	alive.expect("online")                                      // mute's
	mute.conn.SetPingHandler(func(string) error { return nil }) // reads, but never pongs

	ended := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		_ = mute.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			if _, _, err := mute.conn.ReadMessage(); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					ended <- -1
					return
				}
				ended <- time.Since(start)
				return
			}
		}
	}()
	// The answering client keeps reading (so gorilla pongs), sees mute
	// leave, and after several idle periods still gets its own message.
	frames := make(chan frame, 16)
	go func() {
		defer close(frames)
		for {
			_ = alive.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, b, err := alive.conn.ReadMessage()
			if err != nil {
				return
			}
			var f frame
			_ = json.Unmarshal(b, &f)
			f.raw = b
			frames <- f
		}
	}()
	if f := <-frames; f.Type != "offline" {
		t.Fatalf("alive got %s, want mute's offline", f.raw)
	}
	if d := <-ended; d < 0 {
		t.Fatal("mute client was not closed within 5s")
	}
	time.Sleep(500 * time.Millisecond)
	if err := alive.conn.WriteJSON(map[string]any{"body": "still here"}); err != nil {
		t.Fatalf("answering client was cut off: %v", err)
	}
	if f, ok := <-frames; !ok || f.Body != "still here" {
		t.Fatalf("answering client got %s (open %v)", f.raw, ok)
	}
	alive.conn.Close()
	for range frames {
	}
	if v := counterValue(t, s, `chatserver_dropped_clients_total{reason="idle"}`); v != 1 {
		t.Fatalf("dropped idle = %v, want 1", v)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key to dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "chatserver test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLSServesWSS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	_, addr := serveOn(t, func(c *config.Config) {
		c.Server.TLS = config.TLS{CertFile: certFile, KeyFile: keyFile}
	})
	if err := (&config.Config{}).Server.TLS; err.Enabled() {
		t.Fatal("zero TLS config reports enabled")
	}
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial("wss://"+addr+"/chatsocket?room=secure", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &wsClient{t: t, conn: conn}
	c.expect("history")
	c.expect("online")
	c.send(map[string]any{"body": "over tls"})
	if m := c.expect("message"); m.Body != "over tls" || m.Room != "secure" {
		t.Fatalf("got %s", m.raw)
	}

	// A client that does not trust the certificate is refused by TLS.
	if conn, _, err := (&websocket.Dialer{HandshakeTimeout: 5 * time.Second}).Dial("wss://"+addr+"/chatsocket", nil); err == nil {
		conn.Close()
		t.Fatal("untrusted certificate accepted")
	}
	// Plain ws:// to the TLS port does not get a WebSocket.
	if conn, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/chatsocket", nil); err == nil {
		conn.Close()
		t.Fatal("plain ws:// upgraded on the TLS port")
	} else if resp != nil {
		resp.Body.Close()
	}
}

// Control frames from the client, end to end: unsolicited pongs are ignored,
// a ping is answered with its payload, and messages still flow. (Which of the
// reader's wait and gorilla handles which frame is TestWaitReadable's part.)
func TestClientPingsAndPongs(t *testing.T) {
	s := startServer(t, nil)
	c := joined(t, s, "")
	pongs := make(chan string, 1)
	c.conn.SetPongHandler(func(p string) error { pongs <- p; return nil })
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range []string{"", "x", strings.Repeat("p", 125)} {
		if err := c.conn.WriteControl(websocket.PongMessage, []byte(p), deadline); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.conn.WriteControl(websocket.PingMessage, []byte("are you there"), deadline); err != nil {
		t.Fatal(err)
	}
	c.send(map[string]string{"body": "after the control frames"})
	if f := c.next("message"); f.Body != "after the control frames" { // reading runs the pong handler
		t.Fatalf("got %q", f.Body)
	}
	select {
	case p := <-pongs:
		if p != "are you there" {
			t.Errorf("pong payload %q, want the ping's", p)
		}
	default:
		t.Error("no pong for the ping")
	}
}
