package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// FanoutConfig is one fan-out scenario: Subscribers members of Room listen
// while Publishers members send Rate messages per second in all for Duration.
type FanoutConfig struct {
	// Addr is the server's HOST:PORT; it must be a loopback address.
	Addr string
	// Addrs, if not empty, replaces Addr with several servers (the nodes of
	// one cluster), all loopback: subscribers are spread over them round-robin
	// (subscriber i on Addrs[i % len]) and so are publishers (publisher j on
	// Addrs[j % len]). See Spread.
	Addrs []string
	// Room is the room to load. Default "bench".
	Room string
	// Subscribers is the number of listening members. Default 1000.
	Subscribers int
	// Publishers is the number of sending members (they receive the room's
	// frames too, but are not counted as deliveries). Default 2.
	Publishers int
	// Rate is messages per second, all publishers together. Default 100.
	Rate float64
	// Duration is how long publishers send. Default 10s.
	Duration time.Duration
	// BodyBytes is the size of each message body (at least the ~36 bytes of
	// the run id, sequence number and timestamp). Default 40.
	BodyBytes int
	// Settle is the pause between the last join and the first message, so
	// join traffic is over before measuring. Default 1s.
	Settle time.Duration
	// Drain bounds the wait for the last deliveries after the last message
	// was sent. Default 5s.
	Drain time.Duration
	// Compress offers permessage-deflate on every connection.
	Compress bool
	// PID, if not zero, is the server's process: its CPU time and RSS are
	// sampled from /proc.
	PID int
	// PIDs are more server processes (a cluster's nodes): CPU time, write
	// syscalls and RSS are summed over PID and PIDs.
	PIDs []int
	// DialConcurrency bounds simultaneous handshakes. Default 100.
	DialConcurrency int
	// Started, if set, is called when the first message is about to be
	// sent (after joins and Settle): a fault schedule times its faults from
	// it (scripts/loadtest.sh chaos).
	Started func()
}

func (c *FanoutConfig) defaults() error {
	if c.Room == "" {
		c.Room = "bench"
	}
	if c.Subscribers == 0 {
		c.Subscribers = 1000
	}
	if c.Publishers == 0 {
		c.Publishers = 2
	}
	if c.Rate == 0 {
		c.Rate = 100
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.BodyBytes == 0 {
		c.BodyBytes = 40
	}
	if c.Settle == 0 {
		c.Settle = time.Second
	}
	if c.Drain == 0 {
		c.Drain = 5 * time.Second
	}
	if c.DialConcurrency == 0 {
		c.DialConcurrency = 100
	}
	var err error
	switch {
	case c.Subscribers < 1 || c.Subscribers+c.Publishers > MaxConns:
		err = fmt.Errorf("subscribers: want 1..%d connections in all, got %d", MaxConns, c.Subscribers+c.Publishers)
	case c.Publishers < 1 || c.Publishers > MaxPublishers:
		err = fmt.Errorf("publishers: want 1..%d, got %d", MaxPublishers, c.Publishers)
	default:
		err = checkLoad(c.Rate, c.Duration, c.Settle, c.Drain)
	}
	return badConfig(err)
}

// FanoutResult is what one fan-out run measured. Deliveries count message
// frames of this run that reached subscribers, each (subscriber, message)
// pair once; Expected is Accepted × Subscribers.
type FanoutResult struct {
	Scenario    string  `json:"scenario"`
	Subscribers int     `json:"subscribers"`
	Publishers  int     `json:"publishers"`
	Rate        float64 `json:"rate"`
	DurationS   float64 `json:"duration_s"`
	Compress    bool    `json:"compress"`
	Compressed  int     `json:"compressed_conns"` // connections that negotiated permessage-deflate
	Published   int64   `json:"published"`
	Rejected    int64   `json:"rejected"` // error frames the publishers got back (e.g. rate_limited)
	Accepted    int64   `json:"accepted"`
	Expected    int64   `json:"expected"`
	Deliveries  int64   `json:"deliveries"`
	Duplicates  int64   `json:"duplicates"`
	// Reordered counts messages a subscriber got after a later message of
	// the same publisher (each publisher's messages must arrive in the order
	// sent).
	Reordered int64 `json:"reordered"`
	// Gaps counts gap frames subscribers got (a node's outbox overflowed
	// while Redis was down), and GapMissed the messages they said were lost.
	Gaps          int64   `json:"gaps"`
	GapMissed     int64   `json:"gap_missed"`
	Lost          int64   `json:"lost"`
	LossPct       float64 `json:"loss_pct"`
	Disconnected  int     `json:"disconnected"` // subscribers the server closed during the run
	MsgsPerS      float64 `json:"msgs_per_s"`   // published / sending time
	DeliveriesPS  float64 `json:"deliveries_per_s"`
	Latency       Latency `json:"latency"`
	JoinS         float64 `json:"join_s"` // connecting every member, history frames received
	ServerCPUS    float64 `json:"server_cpu_s,omitempty"`
	ServerCPUPct  float64 `json:"server_cpu_pct,omitempty"`
	CPUPerDelivUS float64 `json:"server_cpu_us_per_delivery,omitempty"`
	ServerRSSMB   float64 `json:"server_rss_mb,omitempty"`
	RSSPerConnKB  float64 `json:"server_rss_kb_per_conn,omitempty"`
	// ServerWrites is the server's write syscalls while measuring, and
	// FramesPerWrite the frames it delivered (publishers' copies included)
	// per write: how well writers batch.
	ServerWrites   int64   `json:"server_write_syscalls,omitempty"`
	FramesPerWrite float64 `json:"frames_per_write,omitempty"`
	// Servers is how many servers the members were spread over, and
	// ServerProcs how many processes' CPU and RSS were summed.
	Servers     int `json:"servers"`
	ServerProcs int `json:"server_procs,omitempty"`
	// GeneratorCPUPct is the generator's own CPU use while measuring: near
	// 100 (one core) means the generator, not the server, was the limit.
	GeneratorCPUPct float64 `json:"generator_cpu_pct"`
	Machine         Machine `json:"machine"`
	Sustainable     bool    `json:"sustainable"` // no loss, nobody dropped, p99 < 200 ms
}

// subscriber is one listening member and what it counted.
type subscriber struct {
	c      *wsConn
	seen   []uint64 // bitset of sequence numbers received
	hist   histogram
	n      atomic.Int64 // this run's messages, each once
	frames atomic.Int64 // every frame, presence included
	dups   int64
	// last is the highest sequence number received from each publisher
	// (message k comes from publisher k mod Publishers); -1: none.
	last      []int64
	reordered int64
	gaps      int64
	gapMissed int64
	err       error
}

// Fanout runs the scenario and returns what it measured. It stops by itself:
// after Duration of sending and at most Drain of waiting; ctx ends it sooner.
func Fanout(ctx context.Context, cfg FanoutConfig) (*FanoutResult, error) {
	err := cfg.defaults()
	if err != nil {
		return nil, err
	}
	urls, err := targets(cfg.Addr, cfg.Addrs, cfg.Room)
	if err != nil {
		return nil, err
	}
	pids := serverPIDs(cfg.PID, cfg.PIDs)
	var runID [3]byte
	_, _ = rand.Read(runID[:])
	run := hex.EncodeToString(runID[:])
	maxMsgs := int64(math.Ceil(cfg.Rate*cfg.Duration.Seconds())) + int64(cfg.Publishers)

	sampler, err := newServerSampler(pids)
	if err != nil {
		return nil, err
	}
	total := cfg.Subscribers + cfg.Publishers
	// Subscribers read whatever the server wrote in one wake-up in one read.
	opts := dialOptions{compress: cfg.Compress, readBuffer: 16 << 10}
	joinStart := time.Now()
	conns, err := dialAll(ctx, func(i int) *url.URL { return urls[Spread(i, cfg.Subscribers, len(urls))] }, total, cfg.DialConcurrency, opts, nil)
	if err != nil {
		return nil, err
	}
	joinTime := time.Since(joinStart)
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	res := &FanoutResult{
		Scenario: "fanout", Subscribers: cfg.Subscribers, Publishers: cfg.Publishers, Rate: cfg.Rate,
		DurationS: cfg.Duration.Seconds(), Compress: cfg.Compress, JoinS: joinTime.Seconds(),
		Servers: len(urls), ServerProcs: len(pids),
	}
	for _, c := range conns {
		if c.deflated {
			res.Compressed++
		}
	}

	prefix := []byte(`"body":"` + run + ".")
	subs := make([]*subscriber, cfg.Subscribers)
	var wg sync.WaitGroup
	for i := range subs {
		s := &subscriber{c: conns[i], seen: make([]uint64, (maxMsgs+63)/64), last: make([]int64, cfg.Publishers)}
		for p := range s.last {
			s.last[p] = -1
		}
		subs[i] = s
		wg.Add(1)
		go func() { defer wg.Done(); s.read(prefix) }()
	}
	var rejected atomic.Int64
	pubs := conns[cfg.Subscribers:]
	for _, p := range pubs {
		wg.Add(1)
		go func() { defer wg.Done(); drainPublisher(p, &rejected) }()
	}

	// Let join traffic (online frames, N²/2 of them in a room under the
	// presence limit) end: at least Settle, then until no frame arrived for
	// quietFor, at most a minute.
	if err := settle(ctx, cfg.Settle, func() (n int64) {
		for _, s := range subs {
			n += s.frames.Load()
		}
		return n
	}); err != nil {
		return nil, err
	}
	if err := sampler.begin(); err != nil {
		return nil, err
	}
	if cfg.Started != nil {
		cfg.Started()
	}
	published, sendTime := publish(ctx, pubs, cfg, run, maxMsgs)

	// Wait for the deliveries still on their way, at most Drain.
	drain(ctx, cfg.Drain, func() (n int64) {
		for _, s := range subs {
			n += s.n.Load()
		}
		return n
	}, func() int64 { return (published - rejected.Load()) * int64(cfg.Subscribers) })
	if err := sampler.finish(); err != nil {
		return nil, err
	}
	res.GeneratorCPUPct = sampler.generatorCPUPct()
	for _, c := range conns {
		_ = c.nc.Close()
	}
	wg.Wait()

	var hist histogram
	for _, s := range subs {
		hist.merge(&s.hist)
		res.Deliveries += s.n.Load()
		res.Duplicates += s.dups
		res.Reordered += s.reordered
		res.Gaps += s.gaps
		res.GapMissed += s.gapMissed
		var ce errClosed
		if errors.As(s.err, &ce) {
			res.Disconnected++
		}
	}
	res.Published = published
	res.Rejected = rejected.Load()
	res.Accepted = res.Published - res.Rejected
	res.Expected = res.Accepted * int64(cfg.Subscribers)
	res.Lost = max(res.Expected-res.Deliveries, 0)
	if res.Expected > 0 {
		res.LossPct = 100 * float64(res.Lost) / float64(res.Expected)
	}
	res.MsgsPerS = float64(published) / sendTime.Seconds()
	res.DeliveriesPS = float64(res.Deliveries) / sendTime.Seconds()
	res.Latency = hist.summary()
	if u, ok := sampler.use(total); ok {
		res.ServerCPUS, res.ServerCPUPct = u.cpu.Seconds(), u.cpuPct
		res.CPUPerDelivUS = u.cpuPerUS(res.Deliveries)
		res.ServerWrites = u.writes
		if u.writes > 0 {
			// Publishers get every frame too: count their deliveries.
			all := res.Deliveries + res.Accepted*int64(cfg.Publishers)
			res.FramesPerWrite = float64(all) / float64(u.writes)
		}
		res.ServerRSSMB, res.RSSPerConnKB = u.rssMB, u.rssPerConnKB
	}
	res.Machine = machine()
	res.Sustainable = res.Lost == 0 && res.Rejected == 0 && res.Disconnected == 0 && res.Published > 0 && res.Latency.P99 < 200
	return res, nil
}

// quietFor is how long no frame may arrive before the room counts as settled.
const quietFor = 300 * time.Millisecond

// settle waits at least min, then until count stops changing for quietFor,
// at most a minute in all.
func settle(ctx context.Context, min time.Duration, count func() int64) error {
	deadline := time.Now().Add(time.Minute)
	t := time.NewTimer(min)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	last := count()
	for time.Now().Before(deadline) {
		t.Reset(quietFor)
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		n := count()
		if n == last {
			return nil
		}
		last = n
	}
	return nil
}

// drain waits, after the last send, until got() reaches want() (both are
// read again each time: a refusal may still arrive), d passes or ctx ends.
func drain(ctx context.Context, d time.Duration, got, want func() int64) {
	deadline := time.Now().Add(d)
	for got() < want() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// Spread is the server (an index into FanoutConfig.Addrs) of connection i of
// a fan-out run with subs subscribers over n servers: subscribers (i < subs)
// round-robin from server 0, then publishers round-robin from server 0, so
// each server gets an equal share of both (±1).
func Spread(i, subs, n int) int {
	if n <= 1 {
		return 0
	}
	if i < subs {
		return i % n
	}
	return (i - subs) % n
}

// dialAll opens n connections, connection i to u(i), at most conc at a time,
// and waits for each one's history frame (it is then in the room). On error
// it closes what it opened.
func dialAll(ctx context.Context, u func(i int) *url.URL, n, conc int, o dialOptions, onJoin func(i int, c *wsConn)) ([]*wsConn, error) {
	conns := make([]*wsConn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			errs <- ctx.Err()
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			oi := o
			oi.localIP = sourceIP(i, n)
			t0 := time.Now()
			c, err := dialWS(u(i), oi)
			if err == nil {
				err = c.awaitHistory()
				if err != nil {
					c.nc.Close()
				}
				c.joined = time.Since(t0)
			}
			if err != nil {
				errs <- fmt.Errorf("connection %d of %d: %w", i+1, n, err)
				return
			}
			conns[i] = c
			if onJoin != nil {
				onJoin(i, c)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		for _, c := range conns {
			if c != nil {
				c.nc.Close()
			}
		}
		return nil, err
	}
	return conns, nil
}

// awaitHistory reads until the history frame, the server's first.
func (c *wsConn) awaitHistory() error {
	_ = c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer func() { _ = c.nc.SetReadDeadline(time.Time{}) }()
	for {
		m, err := c.readMessage()
		if err != nil {
			return fmt.Errorf("waiting for the history frame: %w", err)
		}
		if frameType(m) == "history" {
			return nil
		}
	}
}

// frameType returns the value of the first "type" field of a frame, which is
// the frame's own (envelopes put id first and type second; the history frame
// puts type first and its messages after).
func frameType(m []byte) string {
	i := bytes.Index(m, []byte(`"type":"`))
	if i < 0 {
		return ""
	}
	rest := m[i+8:]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// read counts this run's messages until the connection ends. A message
// arrived when the read that brought its last byte returned: the clock is
// read once per read of the socket, not per message (a server's write
// carries many), which on a VM is a fifth of what counting a message costs.
func (s *subscriber) read(prefix []byte) {
	var now int64
	reads := ^uint64(0)
	for {
		m, err := s.c.readMessage()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.err = err
			}
			return
		}
		s.frames.Add(1)
		if r := s.c.rc.n; r != reads {
			reads, now = r, time.Now().UnixNano()
		}
		if bytes.HasPrefix(m, []byte(`{"type":`)) {
			continue // history or error frame, not an envelope
		}
		i := bytes.Index(m, prefix)
		if i < 0 {
			if frameType(m) == "gap" {
				s.gaps++
				if j := bytes.Index(m, []byte(`"missed":`)); j >= 0 {
					n, _, _ := parseInt(m[j+len(`"missed":`):])
					s.gapMissed += n
				}
			}
			continue // presence, or another run's message
		}
		seq, sent, ok := parseBody(m[i+len(prefix):])
		if !ok || seq < 0 || seq >= int64(len(s.seen))*64 {
			continue
		}
		w, bit := seq/64, uint64(1)<<(seq%64)
		if s.seen[w]&bit != 0 {
			s.dups++
			continue
		}
		s.seen[w] |= bit
		if len(s.last) > 0 {
			if p := seq % int64(len(s.last)); seq < s.last[p] {
				s.reordered++
			} else {
				s.last[p] = seq
			}
		}
		s.hist.add(time.Duration(now - sent))
		s.n.Add(1)
	}
}

// parseBody reads "SEQ.UNIXNANO." from the start of b.
func parseBody(b []byte) (seq, sent int64, ok bool) {
	seq, b, ok = parseInt(b)
	if !ok || len(b) == 0 || b[0] != '.' {
		return 0, 0, false
	}
	sent, b, ok = parseInt(b[1:])
	return seq, sent, ok && len(b) > 0 && b[0] == '.'
}

func parseInt(b []byte) (int64, []byte, bool) {
	var v int64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && i < 19; i++ {
		v = v*10 + int64(b[i]-'0')
	}
	return v, b[i:], i > 0
}

// drainPublisher reads a publisher's connection (it is a member of the room
// too, and a member that does not read is dropped as slow), counting the
// error frames its messages got back.
func drainPublisher(c *wsConn, rejected *atomic.Int64) {
	for {
		m, err := c.readMessage()
		if err != nil {
			return
		}
		if bytes.HasPrefix(m, []byte(`{"type":"error"`)) {
			rejected.Add(1)
		}
	}
}

// publish sends messages from pubs in turn on a fixed schedule (message k at
// start + k/Rate), catching up without pause when behind, until Duration is
// over or maxMsgs are sent. It returns how many were sent and how long it took.
// bodyStart opens every message frame the generators send; endBody pads the
// body (after it) to the scenario's BodyBytes.
const bodyStart = `{"body":"`

// endBody completes a message frame a scenario began with bodyStart and its
// own fields ("RUN.…."): the send time in ns and a dot, then 'x's up to
// bodyBytes of body (pad keeps them between calls), and the closing `"}`.
func endBody(body []byte, pad *[]byte, bodyBytes int) []byte {
	body = strconv.AppendInt(body, time.Now().UnixNano(), 10)
	body = append(body, '.')
	if n := bodyBytes - (len(body) - len(bodyStart)); n > 0 {
		for len(*pad) < n {
			*pad = append(*pad, 'x')
		}
		body = append(body, (*pad)[:n]...)
	}
	return append(body, `"}`...)
}

func publish(ctx context.Context, pubs []*wsConn, cfg FanoutConfig, run string, maxMsgs int64) (int64, time.Duration) {
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	var pad []byte
	body := make([]byte, 0, cfg.BodyBytes+64)
	start := time.Now()
	var sent int64
	timer := time.NewTimer(0)
	defer timer.Stop()
	for sent < maxMsgs {
		next := start.Add(time.Duration(sent) * interval)
		if next.Sub(start) >= cfg.Duration {
			break
		}
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return sent, time.Since(start)
			}
		}
		body = append(body[:0], bodyStart...)
		body = append(body, run...)
		body = append(body, '.')
		body = strconv.AppendInt(body, sent, 10)
		body = append(body, '.')
		body = endBody(body, &pad, cfg.BodyBytes)
		if err := pubs[sent%int64(len(pubs))].writeText(body); err != nil {
			break
		}
		sent++
	}
	return sent, max(time.Since(start), cfg.Duration)
}
