package server_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/chatserver/chatserver/pkg/config"
)

var soakFor = flag.Duration("soak", 0, "how long TestSoak runs (0: 5s, or 20s when CI is set); e.g. -soak=5m")

// soakDuration is -soak, else 20s in CI, else 5s.
func soakDuration() time.Duration {
	if *soakFor > 0 {
		return *soakFor
	}
	if os.Getenv("CI") != "" {
		return 20 * time.Second
	}
	return 5 * time.Second
}

// soakPub is a client that publishes numbered messages in bursts.
type soakPub struct {
	id   int
	room string
	conn *websocket.Conn
	sent atomic.Int64 // messages started
}

// soakReader is a steady client: it reads everything and records, per
// publisher, the sequence numbers it saw (history first, then live).
type soakReader struct {
	room    string
	conn    *websocket.Conn
	joinedN map[int]int64   // per publisher: messages started when history arrived
	got     map[int][]int64 // per publisher: what arrived, in order
	mu      sync.Mutex
	err     error
	done    chan struct{}
}

// TestSoak runs connection churn, publishing bursts and slow clients against
// one server, then checks that steady clients lost nothing and that
// goroutines and heap return to their baseline. It stays under 100
// connections at any time.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test skipped in -short mode")
	}
	dur := soakDuration()
	s := startServer(t, func(c *config.Config) {
		fastLimits(c)
		// Steady readers decode every frame under -race on two shared
		// cores; give them room for a scheduling hiccup.
		c.WebSocket.SendQueue = 1024
	})
	wsURL := func(room string) string { return s.wsURL("room=" + room) }
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	// Slow clients get a tiny receive buffer so they back up quickly.
	slowDialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 512,
		NetDial: func(network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			return c, err
		}}

	// Warm up, so that what the first connection starts lazily is in the baseline.
	warm := joined(t, s, "warmup")
	warm.conn.Close()
	waitConnections(t, s, 0)
	runtime.GC()
	baseG := runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapAlloc
	ignore := goleak.IgnoreCurrent()

	rooms := []string{"soak-a", "soak-b"}
	pad := strings.Repeat("x", 400)
	var pubs []*soakPub
	var drainers sync.WaitGroup
	for i, room := range rooms {
		conn, _, err := dialer.Dial(wsURL(room), nil)
		if err != nil {
			t.Fatal(err)
		}
		p := &soakPub{id: i, room: room, conn: conn}
		pubs = append(pubs, p)
		drainers.Add(1)
		go func() { // publishers read too, or they would be dropped as slow
			defer drainers.Done()
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}

	var readers []*soakReader
	addReader := func(room string) {
		conn, _, err := dialer.Dial(wsURL(room), nil)
		if err != nil {
			t.Errorf("steady dial: %v", err)
			return
		}
		r := &soakReader{room: room, conn: conn, joinedN: map[int]int64{}, got: map[int][]int64{}, done: make(chan struct{})}
		readers = append(readers, r)
		go r.run(pubs)
	}
	for i := 0; i < 10; i++ {
		addReader(rooms[i%len(rooms)])
	}

	stop := make(chan struct{})
	var bg sync.WaitGroup
	var churned, slowDialed atomic.Int64
	var bgErr atomic.Value

	// Publishers: bursts of 10, then a pause.
	for _, p := range pubs {
		bg.Add(1)
		go func() {
			defer bg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				for i := 0; i < 10; i++ {
					n := p.sent.Add(1)
					if err := p.conn.WriteJSON(map[string]any{"body": fmt.Sprintf("p%d-%d %s", p.id, n, pad)}); err != nil {
						bgErr.Store(fmt.Errorf("publisher %d: %w", p.id, err))
						return
					}
				}
			}
		}()
	}
	// Churn: connect, read a little, maybe talk, leave; in shared and own rooms.
	for w := 0; w < 6; w++ {
		bg.Add(1)
		go func() {
			defer bg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				room := rooms[i%len(rooms)]
				if i%3 == 0 {
					room = fmt.Sprintf("churn-%d-%d", w, i%5)
				}
				conn, _, err := dialer.Dial(wsURL(room), nil)
				if err != nil {
					bgErr.Store(fmt.Errorf("churn dial: %w", err))
					return
				}
				churned.Add(1)
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, _, _ = conn.ReadMessage() // history
				if i%2 == 0 {
					_ = conn.WriteJSON(map[string]any{"body": "churn", "username": fmt.Sprint("c", w)})
				}
				_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				for j := 0; j < i%4; j++ {
					_, _, _ = conn.ReadMessage()
				}
				if i%2 == 0 {
					_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
				}
				conn.Close() // else: vanish without a close frame
			}
		}()
	}
	// Slow clients: join and never read; at most 20 live, oldest closed first.
	bg.Add(1)
	go func() {
		defer bg.Done()
		var slow []*websocket.Conn
		defer func() {
			for _, c := range slow {
				c.Close()
			}
		}()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			conn, _, err := slowDialer.Dial(wsURL(rooms[i%len(rooms)]), nil)
			if err != nil {
				bgErr.Store(fmt.Errorf("slow dial: %w", err))
				return
			}
			slowDialed.Add(1)
			slow = append(slow, conn)
			if len(slow) > 20 {
				slow[0].Close()
				slow = slow[1:]
			}
		}
	}()
	// Late steady clients, through the run.
	for i := 0; i < 6; i++ {
		time.Sleep(dur / 8)
		addReader(rooms[i%len(rooms)])
	}
	time.Sleep(dur - 6*(dur/8))
	close(stop)
	bg.Wait()
	if err, _ := bgErr.Load().(error); err != nil {
		t.Fatal(err)
	}

	// Every steady client gets everything published after it joined, in order.
	final := map[int]int64{}
	for _, p := range pubs {
		final[p.id] = p.sent.Load()
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range readers {
		for !r.caughtUp(pubs, final) {
			if r.failed() != nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, p := range pubs {
		p.conn.Close()
	}
	for _, r := range readers {
		r.conn.Close()
		<-r.done
	}
	drainers.Wait()
	var total int64
	for i, r := range readers {
		r.mu.Lock()
		if r.err != nil {
			t.Errorf("steady client %d (%s): %v", i, r.room, r.err)
		}
		for _, p := range pubs {
			if p.room != r.room {
				continue
			}
			seqs := r.got[p.id]
			total += int64(len(seqs))
			if err := checkSeqs(seqs, r.joinedN[p.id], final[p.id]); err != nil {
				t.Errorf("steady client %d (%s), publisher %d: %v", i, r.room, p.id, err)
			}
		}
		r.mu.Unlock()
	}

	waitConnections(t, s, 0)
	t.Logf("soak %v: %d published, %d deliveries checked, %d churned connections, %d slow clients (%v dropped as slow)",
		dur, final[0]+final[1], total, churned.Load(), slowDialed.Load(),
		counterValue(t, s, `chatserver_dropped_clients_total{reason="slow"}`))

	// Goroutines and heap return to the baseline.
	goleak.VerifyNone(t, ignore,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
	var g int
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if g = runtime.NumGoroutine(); g <= baseG+4 || time.Now().After(end) {
			break
		}
	}
	if g > baseG+4 {
		t.Errorf("goroutines: %d after, %d before", g, baseG)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	// History keeps 100 messages in each room touched, ~1 KB each; allow that and slack.
	if grown := int64(ms.HeapAlloc) - int64(baseHeap); grown > 16<<20 {
		t.Errorf("heap grew by %d KB (from %d KB)", grown>>10, baseHeap>>10)
	}
}

func (r *soakReader) run(pubs []*soakPub) {
	defer close(r.done)
	for first := true; ; first = false {
		_ = r.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, b, err := r.conn.ReadMessage()
		if err != nil {
			r.mu.Lock()
			if !first && r.err == nil && !websocket.IsCloseError(err, websocket.CloseNormalClosure) && !strings.Contains(err.Error(), "use of closed") {
				r.err = fmt.Errorf("read: %w", err)
			}
			r.mu.Unlock()
			return
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			r.fail(fmt.Errorf("frame is not JSON: %.80s", b))
			return
		}
		r.mu.Lock()
		switch f.Type {
		case "history":
			if !first {
				r.err = fmt.Errorf("second history frame")
			}
			for _, p := range pubs {
				r.joinedN[p.id] = p.sent.Load()
			}
			for _, m := range f.Messages {
				r.record(m.Body)
			}
		case "message":
			r.record(f.Body)
		case "error":
			r.err = fmt.Errorf("error frame %s", b)
		}
		r.mu.Unlock()
	}
}

// record notes a publisher's message; others' messages are ignored. Under r.mu.
func (r *soakReader) record(body string) {
	var p int
	var n int64
	if _, err := fmt.Sscanf(body, "p%d-%d ", &p, &n); err == nil {
		r.got[p] = append(r.got[p], n)
	}
}

func (r *soakReader) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

func (r *soakReader) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *soakReader) caughtUp(pubs []*soakPub, final map[int]int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range pubs {
		if p.room != r.room || final[p.id] == 0 {
			continue
		}
		seqs := r.got[p.id]
		if len(seqs) == 0 || seqs[len(seqs)-1] < final[p.id] {
			return false
		}
	}
	return true
}

// checkSeqs checks that seqs is gap-free and in order, reaches last, and
// starts no later than the first message started after the client joined.
func checkSeqs(seqs []int64, joined, last int64) error {
	if last == 0 {
		return nil
	}
	if len(seqs) == 0 {
		return fmt.Errorf("received nothing of %d messages", last)
	}
	if seqs[0] > joined+1 {
		return fmt.Errorf("first message %d, but %d was published after joining", seqs[0], joined+1)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			return fmt.Errorf("after %d came %d (of %d)", seqs[i-1], seqs[i], last)
		}
	}
	if seqs[len(seqs)-1] != last {
		return fmt.Errorf("last received %d, want %d", seqs[len(seqs)-1], last)
	}
	return nil
}

// waitConnections waits until the server counts n open connections.
func waitConnections(t *testing.T, s *testServer, n float64) {
	t.Helper()
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		v := counterValue(t, s, "chatserver_connections")
		if v == n {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%v connections open, want %v", v, n)
		}
	}
}
