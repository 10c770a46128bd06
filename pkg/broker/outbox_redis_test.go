package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver/internal/brokertest"
	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/broker"
)

// outageClient is a client of a private Redis that gives up quickly.
func outageClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 300 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func directFrameOf(id, to string) []byte {
	return fmt.Appendf(nil, `{"id":%q,"type":"message","room":"lobby","client_id":1,"username":"u","to":%q,"body":"dm","datetime":"","ts":%d}`,
		id, to, time.Now().UnixMilli())
}

// publishMixed publishes count frames from n: kept ones, with a direct
// message every third. It returns what the nodes record, in order.
func publishMixed(t *testing.T, n *node, count int) []string {
	t.Helper()
	var want []string
	for i := range count {
		id := uuid.NewString()
		if i%3 == 2 {
			if err := n.PublishDirect(context.Background(), "lobby", directFrameOf(id, "bob"), "bob", 1); err != nil {
				t.Fatalf("publish direct: %v", err)
			}
			want = append(want, "d:"+id)
			continue
		}
		if err := n.Publish(context.Background(), "lobby", id, frameOf(id, i), true); err != nil {
			t.Fatalf("publish: %v", err)
		}
		want = append(want, id)
	}
	return want
}

// afterReplays returns once both nodes have received, through Redis,
// everything from's outbox replayed: from publishes a frame (it queues behind
// its held frames), other waits for it and answers with one of its own (which
// Redis publishes after from's replays), and from waits for that answer. It
// returns the ids of the two frames, from's first.
func afterReplays(t *testing.T, from, other *node) []string {
	t.Helper()
	mine := publishN(t, from, "lobby", 1)[0]
	testutil.Eventually(t, 15*time.Second, "the other node to get the frame queued behind the replays", func() bool {
		return slices.Contains(other.IDs("lobby"), mine)
	})
	answer := publishN(t, other, "lobby", 1)[0]
	testutil.Eventually(t, 15*time.Second, "the answer to come back through Redis", func() bool {
		return slices.Contains(from.IDs("lobby"), answer) && slices.Contains(other.IDs("lobby"), answer)
	})
	return []string{mine, answer}
}

// subsequence returns the elements of got that are in want, in got's order.
func subsequence(got, want []string) []string {
	in := map[string]bool{}
	for _, w := range want {
		in[w] = true
	}
	var out []string
	for _, g := range got {
		if in[g] {
			out = append(out, g)
		}
	}
	return out
}

func duplicates(ids []string) []string {
	seen := map[string]bool{}
	var dups []string
	for _, id := range ids {
		if seen[id] {
			dups = append(dups, id)
		}
		seen[id] = true
	}
	return dups
}

// Two nodes publish (kept frames and direct messages) while Redis is killed
// with SIGKILL; it comes back, with its data (AOF) or empty. Each node's
// members got its own frames at once; afterwards each node has every frame of
// the other exactly once, each sender's in the order sent, and the history
// holds every kept frame once, each node's in the order it delivered them.
func TestOutboxAcrossRedisRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *redistest.Server
	}{
		{"aof", redistest.StartServerAOF},
		{"empty", redistest.StartServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.start(t)
			rdb := outageClient(t, srv)
			a, b := newNode(t, rdb, "p:"), newNode(t, rdb, "p:")
			brokertest.Join(t, a, "lobby")
			brokertest.Join(t, b, "lobby")
			live := publishN(t, a, "lobby", 2)
			testutil.Eventually(t, 5*time.Second, "live frames on both nodes", func() bool {
				return len(a.IDs("lobby")) == 2 && len(b.IDs("lobby")) == 2
			})

			srv.Kill()
			fromA := publishMixed(t, a, 9)
			fromB := publishMixed(t, b, 9)
			if got := a.IDs("lobby")[2:]; !slices.Equal(got, fromA) {
				t.Fatalf("with Redis down a delivered %v at once, want its own %v", got, fromA)
			}
			if got := b.IDs("lobby")[2:]; !slices.Equal(got, fromB) {
				t.Fatalf("with Redis down b delivered %v at once, want its own %v", got, fromB)
			}

			srv.Start()
			testutil.Eventually(t, 15*time.Second, "the nodes to resubscribe", func() bool {
				return a.resubs.Load() >= 1 && b.resubs.Load() >= 1
			})
			endA, endB := afterReplays(t, a, b), afterReplays(t, b, a)
			wantA := append(slices.Clone(fromA), endA[0], endB[1])
			wantB := append(slices.Clone(fromB), endA[1], endB[0])
			for name, n := range map[string]*node{"a": a, "b": b} {
				got := n.IDs("lobby")
				if d := duplicates(got); len(d) > 0 {
					t.Errorf("%s delivered %v more than once", name, d)
				}
				if s := subsequence(got, wantA); !slices.Equal(s, wantA) {
					t.Errorf("%s got a's frames as %v, want %v", name, s, wantA)
				}
				if s := subsequence(got, wantB); !slices.Equal(s, wantB) {
					t.Errorf("%s got b's frames as %v, want %v", name, s, wantB)
				}
				if len(got) != len(live)+len(wantA)+len(wantB) {
					t.Errorf("%s delivered %d frames, want %d", name, len(got), len(live)+len(wantA)+len(wantB))
				}
			}
			kept := func(ids []string) []string {
				return slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return strings.HasPrefix(id, "d:") })
			}
			h := historyIDs(t, rdb, a.HistoryKey("lobby"))
			if d := duplicates(h); len(d) > 0 {
				t.Errorf("history holds %v more than once", d)
			}
			for name, want := range map[string][]string{"a": kept(wantA), "b": kept(wantB)} {
				if s := subsequence(h, want); !slices.Equal(s, want) {
					t.Errorf("history holds %s's frames as %v, want %v", name, s, want)
				}
			}
			if tc.name == "aof" && !slices.Equal(h[:2], live) {
				t.Errorf("history after an AOF restart starts with %v, want the frames before the outage %v", h[:2], live)
			}
		})
	}
}

// With Redis down, concurrent publishes to one room are kept in history (once
// Redis is back) in the order they were delivered on the node.
func TestOutboxKeepsHistoryInDeliveryOrder(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := outageClient(t, srv)
	var mu sync.Mutex
	var delivered []string
	b := broker.NewRedis(broker.RedisOptions{
		Client: rdb, KeyPrefix: "p:", HistorySize: 1000, ReplaySettle: time.Millisecond,
		Deliver: func(_, id string, _ []byte, _ bool) {
			mu.Lock()
			delivered = append(delivered, id)
			mu.Unlock()
		},
	})
	defer b.Close()
	_ = b.Subscribe(context.Background(), "lobby")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.WaitSubscribed(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				id := fmt.Sprint(g, "-", i)
				if err := b.Publish(context.Background(), "lobby", id, frameOf(id, i), true); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	srv.Start()
	testutil.Eventually(t, 15*time.Second, "the history to hold the 400 frames", func() bool {
		n, _ := rdb.LLen(context.Background(), b.HistoryKey("lobby")).Result()
		return n >= 400
	})
	kept := historyIDs(t, rdb, b.HistoryKey("lobby"))
	mu.Lock()
	defer mu.Unlock()
	if len(kept) != 400 || !slices.Equal(kept, delivered) {
		t.Fatalf("history holds %d entries in another order than the %d delivered", len(kept), len(delivered))
	}
}

// An outage longer than the outbox holds: the oldest held frames are dropped
// and counted, and the other node gets a gap frame saying how many were lost,
// in their place (before the frames that follow the hole), as does history.
func TestOutboxOverflowAnnouncesGap(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := outageClient(t, srv)
	var dropped atomic.Int64
	var gapIDs sync.Map
	a := newNode(t, rdb, "p:", func(o *broker.RedisOptions) {
		o.OutboxSize = 3
		o.OnOutboxDropped = func(n int) { dropped.Add(int64(n)) }
		o.GapFrame = func(room string, missed int) (string, []byte) {
			id := "gap-" + uuid.NewString()
			gapIDs.Store(id, missed)
			return id, fmt.Appendf(nil, `{"id":%q,"type":"gap","room":%q,"data":{"missed":%d}}`, id, room, missed)
		}
	})
	b := newNode(t, rdb, "p:")
	brokertest.Join(t, a, "lobby")
	brokertest.Join(t, b, "lobby")

	srv.Kill()
	sent := publishN(t, a, "lobby", 5)
	if got := a.IDs("lobby"); !slices.Equal(got, sent) {
		t.Fatalf("a delivered %v, want all it accepted %v", got, sent)
	}
	if dropped.Load() != 2 {
		t.Fatalf("dropped %d, want 2 (5 frames, outbox of 3)", dropped.Load())
	}
	srv.Start()
	testutil.Eventually(t, 15*time.Second, "b to get the held frames", func() bool {
		return len(b.IDs("lobby")) == 4
	})
	got := b.IDs("lobby")
	missed, isGap := gapIDs.Load(got[0])
	if !isGap || missed != 2 || !slices.Equal(got[1:], sent[2:]) {
		t.Fatalf("b got %v, want a gap frame (2 missed) then %v", got, sent[2:])
	}
	if h := historyIDs(t, rdb, a.HistoryKey("lobby")); !slices.Equal(h, got) {
		t.Errorf("history holds %v, want what b got %v", h, got)
	}
	if got := a.IDs("lobby"); len(got) != 5 {
		t.Errorf("a delivered its own gap frame or a replay: %v", got)
	}
}

// A node holding more frames than its dedupe ring remembers still drops the
// replays of its own frames (they carry its token): its members got each one
// once, when it was held.
func TestOutboxOwnReplaysDroppedBeyondSeenRing(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := outageClient(t, srv)
	small := func(o *broker.RedisOptions) { o.HistorySize = 10 } // a ring of 256 ids
	a, b := newNode(t, rdb, "p:", small), newNode(t, rdb, "p:", small)
	brokertest.Join(t, a, "lobby")
	brokertest.Join(t, b, "lobby")
	srv.Kill()
	held := publishN(t, a, "lobby", 400)
	srv.Start()
	testutil.Eventually(t, 15*time.Second, "a to resubscribe", func() bool { return a.resubs.Load() >= 1 })
	end := afterReplays(t, a, b)
	endB := afterReplays(t, b, a)
	want := append(append(held, end...), endB...)
	for name, n := range map[string]*node{"a": a, "b": b} {
		if got := n.IDs("lobby"); !slices.Equal(got, want) {
			t.Errorf("%s delivered %d frames (%d duplicates), want the %d sent, once each, in order; missing %v",
				name, len(got), len(duplicates(got)), len(want), missing(got, want))
		}
	}
}

// missing returns the positions in want of the ids got lacks.
func missing(got, want []string) []int {
	var out []int
	for i, w := range want {
		if !slices.Contains(got, w) {
			out = append(out, i)
		}
	}
	return out
}

// A joiner on a node whose outbox holds frames of the room waits until they
// are replayed, so the history it reads next has them (their echo is dropped
// on this node: without the wait it would get them from neither).
func TestWaitSubscribedWaitsForHeldFrames(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := outageClient(t, srv)
	a := newNode(t, rdb, "p:")
	brokertest.Join(t, a, "lobby")
	srv.Kill()
	held := publishN(t, a, "lobby", 5)
	srv.Start()
	testutil.Eventually(t, 15*time.Second, "a to resubscribe", func() bool { return a.resubs.Load() >= 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.WaitSubscribed(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	if h := historyIDs(t, rdb, a.HistoryKey("lobby")); !slices.Equal(h, held) {
		t.Fatalf("history after WaitSubscribed holds %v, want the held frames %v", h, held)
	}
}

// replyDropper is a TCP proxy in front of Redis that, while drop is set,
// forwards commands but throws Redis's replies away: a publish Redis ran
// whose reply never arrives. With subsOnly, only the replies to connections
// that subscribed are dropped (what Redis publishes to them).
type replyDropper struct {
	ln       net.Listener
	drop     atomic.Bool
	subsOnly atomic.Bool
	wg       sync.WaitGroup
}

func newReplyDropper(t *testing.T, target string) *replyDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &replyDropper{ln: ln}
	var mu sync.Mutex
	var conns []net.Conn
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, r)
			mu.Unlock()
			var subscriber atomic.Bool
			p.wg.Go(func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if bytes.Contains(bytes.ToLower(buf[:n]), []byte("subscribe")) {
							subscriber.Store(true)
						}
						if _, err := r.Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				_ = r.Close()
			})
			p.wg.Go(func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := r.Read(buf)
					dropping := p.drop.Load() && (!p.subsOnly.Load() || subscriber.Load())
					if n > 0 && !dropping {
						if _, err := c.Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				_ = c.Close()
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// A publish whose reply is lost after Redis ran it (the connection drops
// replies for a while) is held and replayed; the replay finds its id in the
// history and neither appends nor publishes it again.
func TestOutboxReplayAfterLostReply(t *testing.T) {
	srv := redistest.StartServer(t)
	proxy := newReplyDropper(t, srv.Addr())
	// No retries: a retry of a publish that timed out would run it twice
	// (the server's client has none either, see server/cluster.go).
	viaProxy := redis.NewClient(&redis.Options{Addr: proxy.ln.Addr().String(), DialTimeout: 300 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, WriteTimeout: time.Second, MaxRetries: -1})
	defer viaProxy.Close()
	direct := outageClient(t, srv)
	a, b := newNode(t, viaProxy, "p:"), newNode(t, direct, "p:")
	brokertest.Join(t, a, "lobby")
	brokertest.Join(t, b, "lobby")
	first := publishN(t, a, "lobby", 1) // Redis now has the publish script
	testutil.Eventually(t, 5*time.Second, "b to get the first frame", func() bool { return len(b.IDs("lobby")) == 1 })
	proxy.drop.Store(true)
	id := publishN(t, a, "lobby", 1)[0] // Redis runs it; the reply is lost
	if a.fallbacks.Load() != 1 {
		t.Fatalf("the publish was not held (fallbacks %d)", a.fallbacks.Load())
	}
	testutil.Eventually(t, 5*time.Second, "b to get the frame Redis ran", func() bool { return len(b.IDs("lobby")) == 2 })
	time.Sleep(time.Second) // replays meanwhile lose their replies too
	proxy.drop.Store(false)
	testutil.Eventually(t, 15*time.Second, "the held frame to be replayed", func() bool { return a.Held() == 0 })
	end := afterReplays(t, a, b)
	want := append(append(first, id), end...)
	if h := historyIDs(t, direct, a.HistoryKey("lobby")); !slices.Equal(h, want) {
		t.Errorf("history holds %v, want %v", h, want)
	}
	for name, n := range map[string]*node{"a": a, "b": b} {
		if got := n.IDs("lobby"); !slices.Equal(got, want) {
			t.Errorf("%s delivered %v, want %v", name, got, want)
		}
	}
}

// Redis dies with a frame published but not yet written to another node's
// subscription, and comes back empty: the publishing node puts what it
// published in the last second back in its outbox, so the other node gets it
// after all (once), and the publishing node does not deliver it twice.
func TestOutboxRepublishesWhatRedisLostInFlight(t *testing.T) {
	srv := redistest.StartServer(t)
	proxy := newReplyDropper(t, srv.Addr())
	viaProxy := redis.NewClient(&redis.Options{Addr: proxy.ln.Addr().String(), DialTimeout: 300 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	defer viaProxy.Close()
	a, b := newNode(t, outageClient(t, srv), "p:"), newNode(t, viaProxy, "p:")
	brokertest.Join(t, a, "lobby")
	brokertest.Join(t, b, "lobby")
	before := publishN(t, a, "lobby", 1)
	testutil.Eventually(t, 5*time.Second, "b to get the first frame", func() bool { return len(b.IDs("lobby")) == 1 })
	proxy.drop.Store(true) // b's subscription stops getting what Redis writes
	lost := publishN(t, a, "lobby", 1)
	testutil.Eventually(t, 5*time.Second, "a to get its frame back", func() bool { return len(a.IDs("lobby")) == 2 })
	srv.Kill()
	proxy.drop.Store(false)
	srv.Start() // empty
	testutil.Eventually(t, 15*time.Second, "the nodes to resubscribe", func() bool {
		return a.resubs.Load() >= 1 && b.resubs.Load() >= 1
	})
	end := afterReplays(t, a, b)
	want := append(append(before, lost...), end...)
	for name, n := range map[string]*node{"a": a, "b": b} {
		if got := n.IDs("lobby"); !slices.Equal(got, want) {
			t.Errorf("%s delivered %v, want %v", name, got, want)
		}
	}
}

// A frame published just before Redis dies whose echo this node's
// subscription never got is delivered here when the outage is noticed,
// before the frames held after it: each sender's order holds on its own node
// too, and the replay does not deliver it again.
func TestOutboxOwnFrameLostInFlightKeepsOrder(t *testing.T) {
	srv := redistest.StartServer(t)
	proxy := newReplyDropper(t, srv.Addr())
	proxy.subsOnly.Store(true)
	viaProxy := redis.NewClient(&redis.Options{Addr: proxy.ln.Addr().String(), DialTimeout: 300 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1})
	defer viaProxy.Close()
	a, b := newNode(t, viaProxy, "p:"), newNode(t, outageClient(t, srv), "p:")
	brokertest.Join(t, a, "lobby")
	brokertest.Join(t, b, "lobby")
	proxy.drop.Store(true) // a's subscription stops getting what Redis writes
	first := publishN(t, a, "lobby", 1)
	testutil.Eventually(t, 5*time.Second, "b to get the first frame", func() bool { return len(b.IDs("lobby")) == 1 })
	if got := a.IDs("lobby"); len(got) != 0 {
		t.Fatalf("a delivered %v before Redis died, want nothing (its echo is dropped)", got)
	}
	srv.Kill()
	proxy.drop.Store(false)
	second := publishN(t, a, "lobby", 1) // held
	if got, want := a.IDs("lobby"), append(slices.Clone(first), second...); !slices.Equal(got, want) {
		t.Fatalf("a delivered %v during the outage, want %v in the order sent", got, want)
	}
	srv.Start() // empty
	testutil.Eventually(t, 15*time.Second, "the nodes to resubscribe", func() bool {
		return a.resubs.Load() >= 1 && b.resubs.Load() >= 1
	})
	end := afterReplays(t, a, b)
	want := append(append(slices.Clone(first), second...), end...)
	for name, n := range map[string]*node{"a": a, "b": b} {
		if got := n.IDs("lobby"); !slices.Equal(got, want) {
			t.Errorf("%s delivered %v, want %v", name, got, want)
		}
	}
}
