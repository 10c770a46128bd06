// Package redistest gives tests a real Redis: the shared one on
// 127.0.0.1:6379 with a key prefix of their own, or a private redis-server
// they can kill and restart (fault tests). No mocks.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SharedURL is the Redis the integration tests use (CI starts it).
const SharedURL = "redis://127.0.0.1:6379/0"

// unavailable skips the test outside CI and fails it in CI (CI promises Redis).
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "" {
		t.Skip("skipping: " + msg + " (CI unset; in CI this fails)")
	}
	t.Fatal(msg)
}

// Prefix returns a key prefix unique to this test run on the shared Redis at
// SharedURL, after checking that it answers; every key under it is deleted
// when the test ends.
func Prefix(t testing.TB) string {
	t.Helper()
	opts, _ := redis.ParseURL(SharedURL)
	c := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		unavailable(t, "no Redis at %s: %v", SharedURL, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	prefix := "chatserver-test:" + name + ":" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		keys, err := c.Keys(ctx, redisGlobEscape(prefix)+"*").Result()
		if err == nil && len(keys) > 0 {
			_ = c.Del(ctx, keys...).Err()
		}
	})
	return prefix
}

func redisGlobEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "]", `\]`).Replace(s)
}

// Server is a private redis-server process on a port of its own.
type Server struct {
	t    testing.TB
	Port int
	cmd  *exec.Cmd
	// dir, when set, holds an append-only file written with appendfsync
	// always: a restarted server has every write it acknowledged.
	dir string
}

// FreePort returns a loopback port nobody listens on (listen on :0, close).
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// NewServer reserves a port for a private redis-server without starting it
// (Start does). It is killed when the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		unavailable(t, "redis-server is not installed: %v", err)
	}
	s := &Server{t: t, Port: FreePort(t)}
	t.Cleanup(s.Kill)
	return s
}

// StartServerAOF starts a private redis-server that persists every write
// before acknowledging it (appendonly, appendfsync always, in a temporary
// folder of the test), so a server killed and started again keeps its data.
func StartServerAOF(t testing.TB) *Server {
	t.Helper()
	s := NewServer(t)
	s.dir = t.TempDir()
	s.Start()
	return s
}

// StartServer starts a private redis-server and waits until it answers.
func StartServer(t testing.TB) *Server {
	t.Helper()
	s := NewServer(t)
	s.Start()
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Start runs redis-server on s.Port (no persistence, unless it was made by
// StartServerAOF) and waits until it answers PING.
func (s *Server) Start() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("redistest: server already running")
	}
	args := []string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}
	if s.dir != "" {
		args = append(args[:len(args)-1], "yes", "--appendfsync", "always", "--dir", s.dir)
	}
	cmd := exec.Command("redis-server", args...) //nolint:gosec // a fixed binary; the port is ours
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redistest: starting redis-server: %v", err)
	}
	s.cmd = cmd
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redistest: redis-server on port %d never answered: %v", s.Port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill SIGKILLs this server's process (by its PID) and waits for it to exit;
// a no-op when it is not running.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Client returns a client of the shared Redis and a key prefix unique to the
// test (see Prefix: skipped without Redis outside CI, failed in CI). The client
// is closed when the test ends.
func Client(t testing.TB) (*redis.Client, string) {
	t.Helper()
	prefix := Prefix(t)
	opt, err := redis.ParseURL(SharedURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, prefix
}
