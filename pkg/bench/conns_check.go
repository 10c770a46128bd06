package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// This file is what lets several `bench conns` processes act as one run over
// a cluster (a generator's file limit caps it below what a cluster holds):
// the meeting points in a shared folder, each node's RSS over the members of
// every generator, and the delivery check.

// barrier is a folder where the generator processes of one run meet: each
// writes STAGE.OFFSET and waits until every one has. A generator that fails
// writes failed.OFFSET, which ends everyone's wait with an error instead of a
// timeout. With no folder (one generator) meeting returns at once.
type barrier struct {
	dir  string
	n    int
	self string
}

func newBarrier(dir string, n, offset int) barrier {
	return barrier{dir: dir, n: n, self: strconv.Itoa(offset)}
}

// barrierPoll is how often a waiting generator looks at the folder.
const barrierPoll = 10 * time.Millisecond

// meet writes this generator's STAGE file holding content and waits, at most
// MaxDuration, until all n generators have written theirs; it returns their
// contents and when the last one arrived (its file's time: the same moment
// for every generator, not when each noticed).
func (b barrier) meet(ctx context.Context, stage string, content []byte) ([][]byte, time.Time, error) {
	if b.dir == "" {
		return [][]byte{content}, time.Now(), nil
	}
	if err := b.write(stage, content); err != nil {
		return nil, time.Time{}, err
	}
	deadline := time.Now().Add(MaxDuration)
	for {
		failed, _ := filepath.Glob(filepath.Join(b.dir, "failed.*"))
		if len(failed) > 0 {
			why, _ := os.ReadFile(failed[0]) //nolint:gosec // a file of the run's own folder
			return nil, time.Time{}, fmt.Errorf("sync %s: generator %s failed: %s", stage, strings.TrimPrefix(filepath.Base(failed[0]), "failed."), why)
		}
		names, err := filepath.Glob(filepath.Join(b.dir, stage+".*"))
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("sync %s: %w", stage, err)
		}
		if len(names) >= b.n {
			out := make([][]byte, 0, len(names))
			var last time.Time
			for _, name := range names {
				c, err := os.ReadFile(name) //nolint:gosec // a file of the run's own folder
				if err != nil {
					return nil, time.Time{}, fmt.Errorf("sync %s: %w", stage, err)
				}
				out = append(out, c)
				if fi, err := os.Stat(name); err == nil && fi.ModTime().After(last) {
					last = fi.ModTime()
				}
			}
			return out, last, nil
		}
		if time.Now().After(deadline) {
			return nil, time.Time{}, fmt.Errorf("sync %s: %d of %d generators after %v", stage, len(names), b.n, MaxDuration)
		}
		select {
		case <-ctx.Done():
			return nil, time.Time{}, fmt.Errorf("sync %s: %w", stage, ctx.Err())
		case <-time.After(barrierPoll):
		}
	}
}

// write creates STAGE.SELF atomically (a temporary file renamed), so a
// reader never sees half of it.
func (b barrier) write(stage string, content []byte) error {
	tmp := filepath.Join(b.dir, ".tmp."+stage+"."+b.self)
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		return fmt.Errorf("sync %s: %w", stage, err)
	}
	if err := os.Rename(tmp, filepath.Join(b.dir, stage+"."+b.self)); err != nil {
		return fmt.Errorf("sync %s: %w", stage, err)
	}
	return nil
}

// fail tells the other generators that this one cannot go on.
func (b barrier) fail(err error) {
	if b.dir != "" {
		_ = b.write("failed", []byte(err.Error()))
	}
}

// membersPerNode counts every generator's members on each node from the
// "ready" contents ("OFFSET CONNS" each), and their total.
func membersPerNode(ready [][]byte, cfg ConnsConfig, nodes int) ([]int, int, error) {
	per := make([]int, nodes)
	total := 0
	for _, c := range ready {
		var off, n int
		if _, err := fmt.Sscanf(string(c), "%d %d", &off, &n); err != nil {
			return nil, 0, fmt.Errorf("sync ready: %q: %w", c, err)
		}
		for j := off; j < off+n; j++ {
			node, _ := placeMember(j, nodes, cfg.Rooms)
			per[node]++
		}
		total += n
	}
	return per, total, nil
}

// NodeRSS is one node's memory: its RSS before any generator joined and once
// every generator had joined and settled, and the difference per member on
// that node (every generator's members, not only this one's).
type NodeRSS struct {
	Addr         string  `json:"addr"`
	PID          int     `json:"pid"`
	Conns        int     `json:"conns"`
	BaseRSSMB    float64 `json:"base_rss_mb"`
	RSSMB        float64 `json:"rss_mb"`
	RSSPerConnKB float64 `json:"rss_kb_per_conn"`
	CPUS         float64 `json:"cpu_s"` // from before the first join to after the settle
}

// readEach samples every process of pids.
func readEach(pids []int) ([]procSample, error) {
	out := make([]procSample, len(pids))
	for i, pid := range pids {
		s, err := readProc(pid)
		if err != nil {
			return nil, fmt.Errorf("pid %d: %w", pid, err)
		}
		out[i] = s
	}
	return out, nil
}

// nodeRSS fills Nodes and the sums (ServerRSSMB, BaseRSSMB, RSSPerConnKB
// over every generator's members, ServerCPUS) from the samples.
func (r *ConnsResult) nodeRSS(addrs []string, pids []int, base, end []procSample, perNode []int) {
	var rss, baseRSS int64
	for i, pid := range pids {
		n := NodeRSS{
			Addr: addrs[i], PID: pid, Conns: perNode[i],
			BaseRSSMB: float64(base[i].rssKB) / 1024, RSSMB: float64(end[i].rssKB) / 1024,
			CPUS: (end[i].cpu - base[i].cpu).Seconds(),
		}
		if n.Conns > 0 {
			n.RSSPerConnKB = float64(end[i].rssKB-base[i].rssKB) / float64(n.Conns)
		}
		r.Nodes = append(r.Nodes, n)
		rss += end[i].rssKB
		baseRSS += base[i].rssKB
		r.ServerCPUS += n.CPUS
	}
	r.ServerRSSMB = float64(rss) / 1024
	r.BaseRSSMB = float64(baseRSS) / 1024
	r.RSSPerConnKB = float64(rss-baseRSS) / float64(r.TotalConns)
}

// CheckResult is the delivery check seen by one generator: each of its
// members must get its own room's check message exactly once.
type CheckResult struct {
	Run   string `json:"run"`
	Rooms int    `json:"rooms"`
	// Posted and PostErrors count this generator's posts (the poster's);
	// PostError is the first error.
	Posted     int     `json:"posted,omitempty"`
	PostErrors int     `json:"post_errors,omitempty"`
	PostError  string  `json:"post_error,omitempty"`
	PostS      float64 `json:"post_s,omitempty"` // posting every room's message
	// Members is this generator's connections; Delivered those that got
	// their room's message, Missing those that did not; Duplicates are
	// second copies and Foreign another room's check messages.
	Members    int   `json:"members"`
	Delivered  int64 `json:"delivered"`
	Missing    int64 `json:"missing"`
	Duplicates int64 `json:"duplicates"`
	Foreign    int64 `json:"foreign"`
	// AllDeliveredS is from the check's start (every generator ready) to the
	// last member's message; 0 when some are missing.
	AllDeliveredS float64 `json:"all_delivered_s"`
	// Latency is from a message's post to its arrival, over the members.
	Latency Latency `json:"latency"`
	// OK: every member got its room's message exactly once and no other,
	// and every post was accepted.
	OK bool `json:"ok"`
}

// checkState is what the members' readers record for the check; reader i
// writes only at[i] and sent[i], read once the readers have stopped.
type checkState struct {
	prefix []byte // `"body":"RUN.`
	room   func(i int) int
	at     []int64 // arrival (UnixNano) of member i's room message; 0: none
	sent   []int64 // its post time, from its body
	got    atomic.Int64
	dups   atomic.Int64
	other  atomic.Int64
	start  time.Time // when every generator was ready (set by run)
}

func newCheckState(cfg ConnsConfig) *checkState {
	return &checkState{
		prefix: []byte(`"body":"` + cfg.Check + "."),
		room:   func(i int) int { _, r := cfg.place(i); return r },
		at:     make([]int64, cfg.Conns),
		sent:   make([]int64, cfg.Conns),
	}
}

// see records frame m received by member i, if it is a check message.
func (s *checkState) see(i int, m []byte) {
	if bytes.HasPrefix(m, []byte(`{"type":`)) {
		return // history or error frame, not an envelope
	}
	k := bytes.Index(m, s.prefix)
	if k < 0 {
		return
	}
	room, sent, ok := parseBody(m[k+len(s.prefix):])
	switch {
	case !ok:
		return
	case int(room) != s.room(i):
		s.other.Add(1)
	case s.at[i] != 0:
		s.dups.Add(1)
	default:
		s.at[i], s.sent[i] = time.Now().UnixNano(), sent
		s.got.Add(1)
	}
}

// checkGrace is how long the check waits after the last member got its
// message, for copies that should not come.
const checkGrace = time.Second

// run is the check once every generator is ready (at start): the poster posts, everyone
// waits until each member got its message (at most CheckTimeout) and then
// checkGrace for duplicates. The readers go on until the connections close;
// what they saw is read after that, so run only counts the atomics.
func (s *checkState) run(ctx context.Context, cfg ConnsConfig, addrs []string, start time.Time) *CheckResult {
	res := &CheckResult{Run: cfg.Check, Rooms: cfg.Rooms, Members: cfg.Conns}
	s.start = start
	var posting sync.WaitGroup
	if cfg.Post {
		posting.Add(1)
		go func() {
			defer posting.Done()
			t0 := time.Now()
			res.Posted, res.PostErrors, res.PostError = postCheck(ctx, cfg, addrs)
			res.PostS = time.Since(t0).Seconds()
		}()
	}
	deadline := s.start.Add(cfg.CheckTimeout)
	for s.got.Load() < int64(cfg.Conns) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(barrierPoll)
	}
	select {
	case <-time.After(checkGrace):
	case <-ctx.Done():
	}
	posting.Wait()
	return res
}

// finish fills what the readers saw into res; call it once they stopped.
func (s *checkState) finish(res *CheckResult) {
	var lat histogram
	var last int64
	for i, at := range s.at {
		if at == 0 {
			continue
		}
		lat.add(time.Duration(at - s.sent[i]))
		last = max(last, at)
	}
	res.Delivered = s.got.Load()
	res.Missing = int64(res.Members) - res.Delivered
	res.Duplicates = s.dups.Load()
	res.Foreign = s.other.Load()
	res.Latency = lat.summary()
	if res.Missing == 0 && last > 0 {
		res.AllDeliveredS = time.Duration(last - s.start.UnixNano()).Seconds()
	}
	res.OK = res.Missing == 0 && res.Duplicates == 0 && res.Foreign == 0 && res.PostErrors == 0
}

// postWorkers is how many check messages are posted at a time.
const postWorkers = 8

// postCheck posts one check message to each room 0..Rooms-1 through the
// server API, room r on node r % len(addrs), postWorkers at a time. It
// returns how many were accepted (201), how many were not, and the first
// error.
func postCheck(ctx context.Context, cfg ConnsConfig, addrs []string) (posted, failed int, first string) {
	tr := &http.Transport{MaxIdleConnsPerHost: postWorkers}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var mu sync.Mutex
	rooms := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < postWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rooms {
				err := postOne(ctx, client, addrs[r%len(addrs)], cfg, r)
				mu.Lock()
				if err != nil {
					failed++
					if first == "" {
						first = err.Error()
					}
				} else {
					posted++
				}
				mu.Unlock()
			}
		}()
	}
	for r := 0; r < cfg.Rooms && ctx.Err() == nil; r++ {
		rooms <- r
	}
	close(rooms)
	wg.Wait()
	return posted, failed, first
}

// postOne posts room r's check message: body "RUN.R.UNIXNANO.".
func postOne(ctx context.Context, client *http.Client, addr string, cfg ConnsConfig, r int) error {
	room := cfg.roomName(r)
	body, err := json.Marshal(map[string]string{
		"username": "scale-check",
		"body":     cfg.Check + "." + strconv.Itoa(r) + "." + strconv.FormatInt(time.Now().UnixNano(), 10) + ".",
	})
	if err != nil {
		return err
	}
	u := (&url.URL{Scheme: "http", Host: addr, Path: "/api/rooms/" + room + "/messages"}).String()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("room %s: %w", room, err)
	}
	req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("room %s: %w", room, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("room %s: HTTP %d %s", room, resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

var errCheckFailed = errors.New("delivery check failed")

// CheckError is nil when res has no check or its check passed, else an
// error that says what went wrong (the command exits non-zero with it).
func (r *ConnsResult) CheckError() error {
	c := r.Check
	if c == nil || c.OK {
		return nil
	}
	return fmt.Errorf("%w: %d of %d members missing their room's message, %d duplicates, %d foreign, %d post errors %s",
		errCheckFailed, c.Missing, c.Members, c.Duplicates, c.Foreign, c.PostErrors, c.PostError)
}
