package broker_test

import (
	"context"
	"fmt"
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

// Several nodes, several concurrent senders each (a sender publishes one
// frame at a time, as a client's pipeline does), several rooms; batching on,
// capped small, and off. Every node delivers every frame of a room exactly
// once, every node in the same order, which is the history's, and each
// sender's frames in the order it sent them.
func TestPublishBatchOrderAndExactlyOnce(t *testing.T) {
	for _, tt := range []struct {
		name  string
		tweak func(*broker.RedisOptions)
	}{
		{"batched", func(*broker.RedisOptions) {}},
		{"batches of at most 3", func(o *broker.RedisOptions) { o.PublishBatch = 3 }},
		{"unbatched", func(o *broker.RedisOptions) { o.NoPublishBatch = true }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rdb, prefix := redistest.Client(t)
			nodes := []*node{newNode(t, rdb, prefix, tt.tweak), newNode(t, rdb, prefix, tt.tweak), newNode(t, rdb, prefix, tt.tweak)}
			rooms := []string{"r0", "r1", "r2", "r3"}
			for _, n := range nodes {
				for _, r := range rooms {
					brokertest.Join(t, n, r)
				}
			}
			const sendersPerNode, perSender = 6, 40
			// sent[sender] lists (room, id) in the order the sender sent.
			type sentFrame struct{ room, id string }
			sent := make([][]sentFrame, len(nodes)*sendersPerNode)
			var wg sync.WaitGroup
			for ni, n := range nodes {
				for s := range sendersPerNode {
					k := ni*sendersPerNode + s
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range perSender {
							room := rooms[(k+i)%len(rooms)]
							id := uuid.NewString()
							if err := n.Publish(context.Background(), room, id, frameOf(id, i), true); err != nil {
								t.Errorf("sender %d: publish: %v", k, err)
								return
							}
							sent[k] = append(sent[k], sentFrame{room, id})
						}
					}()
				}
			}
			wg.Wait()
			perRoom := map[string]int{}
			for _, s := range sent {
				for _, f := range s {
					perRoom[f.room]++
				}
			}
			for i, n := range nodes {
				for _, r := range rooms {
					testutil.Eventually(t, 10*time.Second, fmt.Sprintf("node %d to receive room %s", i, r), func() bool {
						return len(n.IDs(r)) >= perRoom[r]
					})
				}
			}
			time.Sleep(100 * time.Millisecond) // a duplicate would arrive now
			for _, r := range rooms {
				want := nodes[0].IDs(r)
				if len(want) != perRoom[r] {
					t.Fatalf("room %s: node 0 delivered %d frames, want %d", r, len(want), perRoom[r])
				}
				pos := map[string]int{}
				for i, id := range want {
					if _, dup := pos[id]; dup {
						t.Fatalf("room %s: frame %s delivered twice", r, id)
					}
					pos[id] = i
				}
				for i, n := range nodes[1:] {
					if got := n.IDs(r); !slices.Equal(got, want) {
						t.Errorf("room %s: node %d's order differs from node 0's", r, i+1)
					}
				}
				if h := historyIDs(t, rdb, nodes[0].HistoryKey(r)); !slices.Equal(h, want) {
					t.Errorf("room %s: history order differs from delivery order (%d vs %d entries)", r, len(h), len(want))
				}
				for k, s := range sent {
					last := -1
					for _, f := range s {
						if f.room != r {
							continue
						}
						p, ok := pos[f.id]
						if !ok {
							t.Fatalf("room %s: sender %d's frame %s never delivered", r, k, f.id)
						}
						if p < last {
							t.Fatalf("room %s: sender %d's frames delivered out of the order sent", r, k)
						}
						last = p
					}
				}
			}
			for i, n := range nodes {
				if f := n.fallbacks.Load(); f != 0 {
					t.Errorf("node %d fell back %d times with Redis up", i, f)
				}
			}
		})
	}
}

// pipelineRecorder is a go-redis hook: it records the EVALSHA commands of each
// pipeline and, once armed, holds the reply of the next single EVALSHA until
// released.
type pipelineRecorder struct {
	mu        sync.Mutex
	pipelines [][]string // the first key of each EVALSHA, per pipeline
	armed     atomic.Bool
	gated     atomic.Bool
	gate      chan struct{}
	entered   chan struct{} // closed when the held EVALSHA has run
}

func newPipelineRecorder() *pipelineRecorder {
	return &pipelineRecorder{gate: make(chan struct{}), entered: make(chan struct{})}
}

func (h *pipelineRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *pipelineRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "evalsha") && h.armed.Load() && h.gated.CompareAndSwap(false, true) {
			err := next(ctx, cmd)
			close(h.entered)
			<-h.gate
			return err
		}
		return next(ctx, cmd)
	}
}

func (h *pipelineRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var evals []string
		for _, c := range cmds {
			if strings.EqualFold(c.Name(), "evalsha") {
				evals = append(evals, fmt.Sprint(c.Args()[3])) // evalsha SHA numkeys KEY …
			}
		}
		if len(evals) > 0 {
			h.mu.Lock()
			h.pipelines = append(h.pipelines, evals)
			h.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// While one publish is in its round trip (one sender), the publishes that
// come meanwhile wait, and then go out together: one pipeline carries all of them (the
// test knows they are all waiting by the batcher's queue, not by time). On a
// Redis of the test's own the script cache is flushed while they wait, so the
// pipeline meets NOSCRIPT: the batcher loads the script and sends them again,
// and each publish still lands exactly once.
func TestPublishBatchGathersWaitingPublishes(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	rec := newPipelineRecorder()
	rdb.AddHook(rec)
	a, b := newNode(t, rdb, "p:"), newNode(t, rdb, "p:")
	brokertest.Join(t, a, "lobby")
	brokertest.Join(t, b, "lobby")

	warm := publishN(t, a, "lobby", 1) // Redis knows the script now
	rec.armed.Store(true)
	first := uuid.NewString()
	errs := make(chan error, 1)
	go func() { errs <- a.Publish(context.Background(), "lobby", first, frameOf(first, 0), true) }()
	<-rec.entered // the first publish ran; its reply is held by the hook

	const waiting = 20
	var wg sync.WaitGroup
	ids := make([]string, waiting)
	for i := range ids {
		ids[i] = uuid.NewString()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Publish(context.Background(), "lobby", ids[i], frameOf(ids[i], i+1), true); err != nil {
				t.Errorf("publish %d: %v", i, err)
			}
		}()
	}
	testutil.Eventually(t, 10*time.Second, "every publish to wait for the batcher", func() bool {
		return a.QueuedPublishes() == waiting
	})
	if err := rdb.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	close(rec.gate)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	rec.mu.Lock()
	pipes := slices.Clone(rec.pipelines)
	rec.mu.Unlock()
	// The batch of 20 is refused (NOSCRIPT), then sent again once loaded.
	if len(pipes) != 2 || len(pipes[0]) != waiting || len(pipes[1]) != waiting {
		sizes := make([]int, len(pipes))
		for i, p := range pipes {
			sizes[i] = len(p)
		}
		t.Fatalf("pipelines of EVALSHA: sizes %v, want [%d %d]", sizes, waiting, waiting)
	}
	want := append([]string{warm[0], first}, ids...)
	for name, n := range map[string]*node{"a": a, "b": b} {
		testutil.Eventually(t, 5*time.Second, name+" to deliver every frame", func() bool { return len(n.IDs("lobby")) >= len(want) })
	}
	time.Sleep(100 * time.Millisecond) // a duplicate would arrive now
	got := a.IDs("lobby")
	if len(got) != len(want) || !slices.Equal(got[:2], want[:2]) {
		t.Fatalf("a delivered %d frames, want %d starting with the two sent before the batch", len(got), len(want))
	}
	if !slices.Equal(b.IDs("lobby"), got) || !slices.Equal(historyIDs(t, rdb, a.HistoryKey("lobby")), got) {
		t.Fatal("nodes or history disagree on the order")
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatal("delivered frames are not the published ones, each once")
	}
}

// Close answers publishes: one made after Close runs alone, as before
// batching (a server's last leave events), and lands once.
func TestPublishAfterCloseRunsAlone(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	b := broker.NewRedis(broker.RedisOptions{Client: rdb, KeyPrefix: prefix, Deliver: func(string, string, []byte, bool) {}})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Publish(ctx, "r", id, frameOf(id, 0), true); err != nil {
		t.Fatal(err)
	}
	if h := historyIDs(t, rdb, b.HistoryKey("r")); !slices.Equal(h, []string{id}) {
		t.Fatalf("history %v, want [%s]", h, id)
	}
}
