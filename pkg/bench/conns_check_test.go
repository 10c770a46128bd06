package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/pkg/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// net/http keeps idle client connections' readers (the in-process
		// servers' own) until their transport is closed.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

const testAPIKey = "bench-test-key-0123456789abcdef-0123456789"

// clusterNodes starts n in-process nodes of one cluster (Redis broker and
// history under a key prefix of the test's own, the server API on with
// testAPIKey); wrap, if set, wraps node i's handler. Without a Redis on
// 127.0.0.1:6379 the test skips (in CI it fails).
func clusterNodes(t *testing.T, n int, wrap func(i int) func(http.Handler) http.Handler) []string {
	t.Helper()
	prefix := redistest.Prefix(t)
	node := func(cfg *config.Config) {
		cfg.Broker.Type = "redis"
		cfg.History.Store = "redis"
		cfg.Redis.URL = redistest.SharedURL
		cfg.Redis.KeyPrefix = prefix
		cfg.API.Keys = []string{testAPIKey}
	}
	addrs := make([]string, n)
	for i := range addrs {
		var w func(http.Handler) http.Handler
		if wrap != nil {
			w = wrap(i)
		}
		addrs[i] = startServerWrapped(t, node, w)
	}
	return addrs
}

// Two generator processes' worth (two Conns runs meeting in one folder) over
// two nodes: each node gets half of every generator's members, every room
// has members on both nodes, and the message posted to each room (through
// one node or the other) reaches each of its members exactly once.
func TestConnsCheckAcrossNodes(t *testing.T) {
	var joins [2]atomic.Int64
	addrs := clusterNodes(t, 2, func(i int) func(http.Handler) http.Handler { return countJoins(&joins[i]) })
	dir := t.TempDir()
	results := make([]*ConnsResult, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for g := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[g], errs[g] = Conns(context.Background(), ConnsConfig{
				Addrs: addrs, PIDs: []int{os.Getpid(), os.Getpid()}, Room: "scale", Conns: 20, Rooms: 8,
				Offset: 20 * g, Sync: dir, Generators: 2, Settle: 100 * time.Millisecond,
				Check: "t1", Post: g == 1, APIKey: testAPIKey, CheckTimeout: 10 * time.Second,
			})
		}()
	}
	wg.Wait()
	for g, res := range results {
		if errs[g] != nil {
			t.Fatalf("generator %d: %v", g, errs[g])
		}
		c := res.Check
		if c == nil || !c.OK || c.Members != 20 || c.Delivered != 20 || c.Missing != 0 || c.Duplicates != 0 || c.Foreign != 0 {
			t.Fatalf("generator %d: check %+v, want all 20 delivered once", g, c)
		}
		if !(c.AllDeliveredS > 0) || c.Latency.Max <= 0 {
			t.Fatalf("generator %d: all delivered in %v, latency %+v", g, c.AllDeliveredS, c.Latency)
		}
		if res.TotalConns != 40 || res.Servers != 2 || len(res.Nodes) != 2 || res.Nodes[0].Conns != 20 || res.Nodes[1].Conns != 20 {
			t.Fatalf("generator %d: total %d, servers %d, nodes %+v; want 40 over 2 nodes, 20 each", g, res.TotalConns, res.Servers, res.Nodes)
		}
		if res.Disconnected != 0 || res.CheckError() != nil {
			t.Fatalf("generator %d: disconnected %d, %v", g, res.Disconnected, res.CheckError())
		}
	}
	if p := results[1].Check; p.Posted != 8 || p.PostErrors != 0 || results[0].Check.Posted != 0 {
		t.Fatalf("poster posted %d (errors %d), the other %d; want 8, 0, 0", p.Posted, p.PostErrors, results[0].Check.Posted)
	}
	if joins[0].Load() != 20 || joins[1].Load() != 20 {
		t.Fatalf("handshakes per node %d, %d; want 20, 20", joins[0].Load(), joins[1].Load())
	}
}

// refusePost makes a node answer 503 to the post of room, without posting it.
func refusePost(room string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/api/rooms/"+room+"/messages" {
				http.Error(w, "refused by the test", http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
}

// postTwice makes a node run the post of room twice: the server really
// broadcasts it twice.
func postTwice(room string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/api/rooms/"+room+"/messages" {
				body, _ := io.ReadAll(r.Body)
				first := r.Clone(r.Context())
				first.Body = io.NopCloser(bytes.NewReader(body))
				h.ServeHTTP(httptest.NewRecorder(), first)
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			h.ServeHTTP(w, r)
		})
	}
}

// The check fails, and says how, when members do not get exactly their
// room's message: 16 members over 2 nodes and 4 rooms (4 each, 2 per node);
// room 1 is posted through node 1, room 2 through node 0.
func TestConnsCheckReportsFailures(t *testing.T) {
	for _, tt := range []struct {
		name          string
		node          int
		wrap          func(http.Handler) http.Handler
		missing, dups int64
		delivered     int64
		postErrors    int
	}{
		{name: "room 1's post refused: its members miss it", node: 1, wrap: refusePost("scale-1"), missing: 4, delivered: 12, postErrors: 1},
		{name: "room 2's message sent twice: duplicates", node: 0, wrap: postTwice("scale-2"), dups: 4, delivered: 16},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addrs := clusterNodes(t, 2, func(i int) func(http.Handler) http.Handler {
				if i == tt.node {
					return tt.wrap
				}
				return nil
			})
			res, err := Conns(context.Background(), ConnsConfig{
				Addrs: addrs, Room: "scale", Conns: 16, Rooms: 4, Settle: 100 * time.Millisecond,
				Check: "t2", Post: true, APIKey: testAPIKey, CheckTimeout: 2 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			c := res.Check
			if c.OK || c.Missing != tt.missing || c.Duplicates != tt.dups || c.Delivered != tt.delivered || c.PostErrors != tt.postErrors || c.Foreign != 0 {
				t.Fatalf("check %+v; want not ok, missing %d, duplicates %d, delivered %d, post errors %d",
					c, tt.missing, tt.dups, tt.delivered, tt.postErrors)
			}
			if c.AllDeliveredS != 0 && c.Missing > 0 {
				t.Fatalf("all delivered in %v with %d missing", c.AllDeliveredS, c.Missing)
			}
			if err := res.CheckError(); !errors.Is(err, errCheckFailed) {
				t.Fatalf("CheckError: %v", err)
			}
		})
	}
}

func TestCheckStateSee(t *testing.T) {
	// Member 0 is in room 0, member 1 in room 1 (one node, 2 rooms).
	msg := func(run string, room int) []byte {
		return []byte(fmt.Sprintf(`{"id":"x","type":"message","room":"r","client_id":1,"username":"scale-check","body":"%s.%d.%d.","html":""}`,
			run, room, time.Now().UnixNano()))
	}
	for _, tt := range []struct {
		name               string
		member             int
		frames             [][]byte
		got, dups, foreign int64
	}{
		{"its room's message", 0, [][]byte{msg("abc", 0)}, 1, 0, 0},
		{"twice", 1, [][]byte{msg("abc", 1), msg("abc", 1)}, 1, 1, 0},
		{"another room's", 0, [][]byte{msg("abc", 1)}, 0, 0, 1},
		{"another run's", 0, [][]byte{msg("abd", 0), msg("ab", 0)}, 0, 0, 0},
		{"in a history frame", 0, [][]byte{[]byte(`{"type":"history","room":"r","messages":[` + string(msg("abc", 0)) + `]}`)}, 0, 0, 0},
		{"presence", 0, [][]byte{[]byte(`{"id":"y","type":"online","room":"r","client_id":2,"username":"v"}`)}, 0, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newCheckState(ConnsConfig{Check: "abc", Conns: 2, Rooms: 2})
			for _, f := range tt.frames {
				s.see(tt.member, f)
			}
			if s.got.Load() != tt.got || s.dups.Load() != tt.dups || s.other.Load() != tt.foreign {
				t.Fatalf("got %d, dups %d, foreign %d; want %d, %d, %d", s.got.Load(), s.dups.Load(), s.other.Load(), tt.got, tt.dups, tt.foreign)
			}
		})
	}
}

func TestPlaceMember(t *testing.T) {
	// 3 nodes, 2 rooms: members 0..5 fill room 0 on nodes 0,1,2, then room 1.
	var got []string
	for j := 0; j < 8; j++ {
		n, r := placeMember(j, 3, 2)
		got = append(got, fmt.Sprintf("%d/%d", n, r))
	}
	if want := "[0/0 1/0 2/0 0/1 1/1 2/1 0/0 1/0]"; fmt.Sprint(got) != want {
		t.Fatalf("placeMember: %v, want %v", got, want)
	}
	per, total, err := membersPerNode([][]byte{[]byte("0 5\n"), []byte("5 3\n")}, ConnsConfig{Rooms: 2}, 3)
	if err != nil || total != 8 || fmt.Sprint(per) != "[3 3 2]" {
		t.Fatalf("membersPerNode: %v, %d, %v; want [3 3 2], 8", per, total, err)
	}
}

// A generator that fails ends the others' wait at once, with its reason.
func TestBarrierFailure(t *testing.T) {
	dir := t.TempDir()
	newBarrier(dir, 2, 10).fail(errors.New("no route"))
	_, _, err := newBarrier(dir, 2, 0).meet(context.Background(), "ready", nil)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("generator 10 failed: no route")) {
		t.Fatalf("meet: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ready.0")); err != nil {
		t.Fatalf("own ready file: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := newBarrier(t.TempDir(), 2, 0).meet(ctx, "armed", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("meet with a cancelled context: %v", err)
	}
}

// A generator that cannot connect stops the run: the other one, waiting for
// it to join, ends with its reason instead of waiting out MaxDuration.
func TestConnsGeneratorFailureStopsTheRun(t *testing.T) {
	good := startServer(t, nil)
	dir := t.TempDir()
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for g, addr := range []string{good, "127.0.0.1:1"} { // nothing listens on port 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[g] = Conns(context.Background(), ConnsConfig{
				Addr: addr, Conns: 5, Offset: 5 * g, Sync: dir, Generators: 2, Settle: 50 * time.Millisecond,
			})
		}()
	}
	wg.Wait()
	if errs[1] == nil || errs[0] == nil || !bytes.Contains([]byte(errs[0].Error()), []byte("generator 5 failed")) {
		t.Fatalf("errors %v, %v; want the dial failure, and the other generator stopped by it", errs[1], errs[0])
	}
}

// A generator that refuses its own options (here a dial concurrency out of
// range) fails in the run's folder too: the other one, waiting for it before
// dialling, ends with its reason instead of waiting out MaxDuration.
func TestConnsRefusedGeneratorStopsTheRun(t *testing.T) {
	dir := t.TempDir()
	_, err := Conns(context.Background(), ConnsConfig{
		Addr: "127.0.0.1:1", Conns: 5, Offset: 5, Sync: dir, Generators: 2, DialConcurrency: -1,
	})
	if !isBadConfig(err) {
		t.Fatalf("refused generator: %v, want ErrBadConfig", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Conns(ctx, ConnsConfig{Addr: "127.0.0.1:1", Conns: 5, Sync: dir, Generators: 2})
	if err == nil || !strings.Contains(err.Error(), "generator 5 failed") || !strings.Contains(err.Error(), "dial concurrency") {
		t.Fatalf("the other generator: %v; want it stopped by generator 5's refusal, naming it", err)
	}
}
