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
	mrand "math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// RoomsConfig is the many-small-rooms scenario: Rooms rooms of Members
// members each, every member in exactly one room, and each room with a
// publisher of its own (one of its members) sending Rate/Rooms messages per
// second on a schedule of its own (a fixed interval from a random phase), so
// publishes from different rooms arrive spread over time, as from many
// independent conversations. What a cluster's broker pays per message (one
// Redis round trip, or a share of one when batched) shows here, where
// fan-out per message is small.
type RoomsConfig struct {
	// Addr is the server's HOST:PORT; it must be a loopback address.
	Addr string
	// Addrs, if not empty, replaces Addr with several servers (a cluster's
	// nodes), all loopback: connection i (member i%Members of room
	// i/Members) goes to Addrs[i % len], so a room's members sit on
	// different nodes.
	Addrs []string
	// Room is the rooms' name prefix: rooms are Room-0 … Room-(Rooms-1).
	// Default "rooms".
	Room string
	// Rooms is the number of rooms. Default 2000.
	Rooms int
	// Members is the number of members per room, the publisher included
	// (it receives its own messages, and they count). Default 5.
	Members int
	// Rate is messages per second over all rooms. Default 1000.
	Rate float64
	// Duration is how long rooms publish. Default 10s.
	Duration time.Duration
	// BodyBytes is the size of each message body (at least the run id,
	// room, sequence number and timestamp). Default 40.
	BodyBytes int
	// Settle is the pause between the last join and the first message, then
	// until no frame arrived for 300 ms (join traffic over). Default 1s.
	Settle time.Duration
	// Drain bounds the wait for the last deliveries after the last message
	// was sent. Default 5s.
	Drain time.Duration
	// PID and PIDs are server processes: their CPU time, write syscalls and
	// RSS are sampled from /proc and summed.
	PID  int
	PIDs []int
	// Compress offers permessage-deflate on every connection.
	Compress bool
	// DialConcurrency bounds simultaneous handshakes. Default 200.
	DialConcurrency int
}

func (c *RoomsConfig) defaults() error {
	if c.Room == "" {
		c.Room = "rooms"
	}
	if c.Rooms == 0 {
		c.Rooms = 2000
	}
	if c.Members == 0 {
		c.Members = 5
	}
	if c.Rate == 0 {
		c.Rate = 1000
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
		c.DialConcurrency = 200
	}
	var err error
	switch {
	// Each factor first: their product may overflow.
	case c.Rooms < 1 || c.Members < 1 || c.Rooms > MaxConns || c.Members > MaxConns || c.Rooms*c.Members > MaxConns:
		err = fmt.Errorf("rooms × members: want 1..%d connections in all, got %d × %d", MaxConns, c.Rooms, c.Members)
	case c.DialConcurrency < 1 || c.DialConcurrency > MaxConns:
		err = fmt.Errorf("dial concurrency: want 1..%d, got %d", MaxConns, c.DialConcurrency)
	default:
		err = checkLoad(c.Rate, c.Duration, c.Settle, c.Drain)
	}
	return badConfig(err)
}

// RoomsResult is what one rooms run measured. Deliveries count this run's
// message frames that reached members of the sender's room, each (member,
// message) pair once; Expected is Σ accepted messages of a room × Members.
type RoomsResult struct {
	Scenario  string  `json:"scenario"`
	Rooms     int     `json:"rooms"`
	Members   int     `json:"members"`
	Conns     int     `json:"conns"`
	Rate      float64 `json:"rate"`
	DurationS float64 `json:"duration_s"`
	Compress  bool    `json:"compress"`
	// Compressed is the connections that negotiated permessage-deflate.
	Compressed int   `json:"compressed_conns"`
	Published  int64 `json:"published"`
	Rejected   int64 `json:"rejected"` // error frames the publishers got back (e.g. rate_limited)
	Accepted   int64 `json:"accepted"`
	// MsgsPerS is the ingress achieved: published / sending time (lower
	// than Rate when the sender fell behind its schedule).
	MsgsPerS     float64 `json:"msgs_per_s"`
	Expected     int64   `json:"expected"`
	Deliveries   int64   `json:"deliveries"`
	DeliveriesPS float64 `json:"deliveries_per_s"`
	Duplicates   int64   `json:"duplicates"`
	// Reordered counts messages a member got after a later one of its room
	// (each room has one publisher: its messages must arrive in order).
	Reordered int64 `json:"reordered"`
	// Misrouted counts this run's messages a member got from another room.
	Misrouted     int64   `json:"misrouted"`
	Lost          int64   `json:"lost"`
	LossPct       float64 `json:"loss_pct"`
	Disconnected  int     `json:"disconnected"` // members the server closed during the run
	Latency       Latency `json:"latency"`
	JoinS         float64 `json:"join_s"`
	ServerCPUS    float64 `json:"server_cpu_s,omitempty"`
	ServerCPUPct  float64 `json:"server_cpu_pct,omitempty"`
	CPUPerDelivUS float64 `json:"server_cpu_us_per_delivery,omitempty"`
	CPUPerMsgUS   float64 `json:"server_cpu_us_per_msg,omitempty"`
	ServerRSSMB   float64 `json:"server_rss_mb,omitempty"`
	RSSPerConnKB  float64 `json:"server_rss_kb_per_conn,omitempty"`
	ServerWrites  int64   `json:"server_write_syscalls,omitempty"`
	// FramesPerWrite is deliveries per server write syscall.
	FramesPerWrite  float64 `json:"frames_per_write,omitempty"`
	Servers         int     `json:"servers"`
	ServerProcs     int     `json:"server_procs,omitempty"`
	GeneratorCPUPct float64 `json:"generator_cpu_pct"`
	Machine         Machine `json:"machine"`
	// Sustainable: zero loss, no duplicate, reordering, misrouting or
	// refusal, nobody dropped, ingress ≥ 97 % of Rate, p99 < 100 ms.
	Sustainable bool `json:"sustainable"`
}

// roomMember is one member of one room and what it counted.
type roomMember struct {
	c         *wsConn
	room      int64
	seen      []uint64 // bitset of the room's sequence numbers received
	last      int64    // highest sequence number received; -1: none
	hist      histogram
	n         atomic.Int64 // this run's messages of its room, each once
	frames    atomic.Int64 // every frame, presence included
	rejected  atomic.Int64 // error frames (only a publisher gets them)
	dups      int64
	reordered int64
	misrouted int64
	err       error
}

// roomSchedule is when each room publishes: message k of room r at
// phase[r] + k·interval, while that is under the duration.
type roomSchedule struct {
	interval time.Duration
	phase    []time.Duration
	order    []int // rooms by phase
}

func newRoomSchedule(rooms int, rate float64, rng *mrand.Rand) roomSchedule {
	s := roomSchedule{interval: time.Duration(float64(rooms) / rate * float64(time.Second)), phase: make([]time.Duration, rooms)}
	for r := range s.phase {
		s.phase[r] = time.Duration(rng.Int64N(int64(max(s.interval, 1))))
		s.order = append(s.order, r)
	}
	slices.SortStableFunc(s.order, func(a, b int) int { return int(s.phase[a] - s.phase[b]) })
	return s
}

// count is how many messages room r sends within d.
func (s roomSchedule) count(r int, d time.Duration) int64 {
	if s.phase[r] >= d {
		return 0
	}
	return int64((d-s.phase[r]-1)/max(s.interval, 1)) + 1
}

// Rooms runs the scenario and returns what it measured. It stops by itself:
// after Duration of sending and at most Drain of waiting; ctx ends it sooner.
func Rooms(ctx context.Context, cfg RoomsConfig) (*RoomsResult, error) {
	err := cfg.defaults()
	if err != nil {
		return nil, err
	}
	bases, err := targets(cfg.Addr, cfg.Addrs, cfg.Room)
	if err != nil {
		return nil, err
	}
	total := cfg.Rooms * cfg.Members
	limit, err := fileLimit()
	if err != nil {
		return nil, fmt.Errorf("reading the file limit: %w", err)
	}
	if uint64(total)+64 > limit {
		return nil, fmt.Errorf("rooms × members: %d connections need more than this process's file limit of %d", total, limit)
	}
	pids := serverPIDs(cfg.PID, cfg.PIDs)
	var runID [3]byte
	_, _ = rand.Read(runID[:])
	run := hex.EncodeToString(runID[:])
	sched := newRoomSchedule(cfg.Rooms, cfg.Rate, mrand.New(mrand.NewPCG(uint64(runID[0])<<16|uint64(runID[1])<<8|uint64(runID[2]), 1))) //nolint:gosec // a load schedule, not a secret
	perRoom := sched.count(sched.order[0], cfg.Duration) + 1                                                                             // the most any room sends

	sampler, err := newServerSampler(pids)
	if err != nil {
		return nil, err
	}
	urlOf := func(i int) *url.URL {
		u := *bases[i%len(bases)]
		u.RawQuery = url.Values{"room": {cfg.Room + "-" + strconv.Itoa(i/cfg.Members)}}.Encode()
		return &u
	}
	joinStart := time.Now()
	conns, err := dialAll(ctx, urlOf, total, cfg.DialConcurrency, dialOptions{compress: cfg.Compress, readBuffer: 4096}, nil)
	if err != nil {
		return nil, err
	}
	joinTime := time.Since(joinStart)
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	res := &RoomsResult{
		Scenario: "rooms", Rooms: cfg.Rooms, Members: cfg.Members, Conns: total, Rate: cfg.Rate,
		DurationS: cfg.Duration.Seconds(), Compress: cfg.Compress, JoinS: joinTime.Seconds(), Servers: len(bases), ServerProcs: len(pids),
	}
	for _, c := range conns {
		if c.deflated {
			res.Compressed++
		}
	}

	prefix := []byte(`"body":"` + run + ".")
	members := make([]*roomMember, total)
	var wg sync.WaitGroup
	for i := range members {
		m := &roomMember{c: conns[i], room: int64(i / cfg.Members), seen: make([]uint64, (perRoom+63)/64), last: -1}
		members[i] = m
		wg.Add(1)
		go func() { defer wg.Done(); m.read(prefix) }()
	}
	if err := settle(ctx, cfg.Settle, func() (n int64) {
		for _, m := range members {
			n += m.frames.Load()
		}
		return n
	}); err != nil {
		return nil, err
	}
	if err := sampler.begin(); err != nil {
		return nil, err
	}
	// Room r's publisher is its member r % Members, so publishers are
	// spread over the members' positions (and so over the servers).
	publisher := func(r int) *wsConn { return conns[r*cfg.Members+r%cfg.Members] }
	published, sendTime := publishRooms(ctx, publisher, sched, cfg, run)

	expected := func() (n int64) {
		for r := range cfg.Rooms {
			n += published[r]
		}
		for _, m := range members {
			n -= m.rejected.Load()
		}
		return n * int64(cfg.Members)
	}
	drain(ctx, cfg.Drain, func() (n int64) {
		for _, m := range members {
			n += m.n.Load()
		}
		return n
	}, expected)
	if err := sampler.finish(); err != nil {
		return nil, err
	}
	res.GeneratorCPUPct = sampler.generatorCPUPct()
	for _, c := range conns {
		_ = c.nc.Close()
	}
	wg.Wait()

	var hist histogram
	for _, m := range members {
		hist.merge(&m.hist)
		res.Deliveries += m.n.Load()
		res.Duplicates += m.dups
		res.Reordered += m.reordered
		res.Misrouted += m.misrouted
		res.Rejected += m.rejected.Load()
		var ce errClosed
		if errors.As(m.err, &ce) {
			res.Disconnected++
		}
	}
	for _, n := range published {
		res.Published += n
	}
	res.Accepted = res.Published - res.Rejected
	res.Expected = res.Accepted * int64(cfg.Members)
	res.Lost = max(res.Expected-res.Deliveries, 0)
	if res.Expected > 0 {
		res.LossPct = 100 * float64(res.Lost) / float64(res.Expected)
	}
	res.MsgsPerS = float64(res.Published) / sendTime.Seconds()
	res.DeliveriesPS = float64(res.Deliveries) / sendTime.Seconds()
	res.Latency = hist.summary()
	if u, ok := sampler.use(total); ok {
		res.ServerCPUS, res.ServerCPUPct = u.cpu.Seconds(), u.cpuPct
		res.CPUPerDelivUS = u.cpuPerUS(res.Deliveries)
		res.CPUPerMsgUS = u.cpuPerUS(res.Accepted)
		res.ServerWrites = u.writes
		if u.writes > 0 {
			res.FramesPerWrite = float64(res.Deliveries) / float64(u.writes)
		}
		res.ServerRSSMB, res.RSSPerConnKB = u.rssMB, u.rssPerConnKB
	}
	res.Machine = machine()
	res.Sustainable = res.Published > 0 && res.Lost == 0 && res.Duplicates == 0 && res.Reordered == 0 &&
		res.Misrouted == 0 && res.Rejected == 0 && res.Disconnected == 0 &&
		res.MsgsPerS >= 0.97*cfg.Rate && res.Latency.P99 < 100
	return res, nil
}

// publishRooms sends every room's messages on its schedule from one
// goroutine, rooms in phase order round after round, catching up without
// pause when behind, until Duration is over. It returns how many each room
// sent and how long sending took (at least Duration).
func publishRooms(ctx context.Context, pub func(r int) *wsConn, s roomSchedule, cfg RoomsConfig, run string) ([]int64, time.Duration) {
	sent := make([]int64, len(s.phase))
	var pad []byte
	body := make([]byte, 0, cfg.BodyBytes+80)
	timer := time.NewTimer(0)
	defer timer.Stop()
	start := time.Now()
	for k := int64(0); ; k++ {
		for _, r := range s.order {
			at := s.phase[r] + time.Duration(k)*s.interval
			if at >= cfg.Duration {
				// Phases are below the interval and rooms go in phase
				// order: every later room of this round is past it too.
				return sent, max(time.Since(start), cfg.Duration)
			}
			if d := time.Until(start.Add(at)); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return sent, max(time.Since(start), cfg.Duration)
				}
			}
			body = append(body[:0], bodyStart...)
			body = append(body, run...)
			body = append(body, '.')
			body = strconv.AppendInt(body, int64(r), 10)
			body = append(body, '.')
			body = strconv.AppendInt(body, k, 10)
			body = append(body, '.')
			body = endBody(body, &pad, cfg.BodyBytes)
			if err := pub(r).writeText(body); err != nil {
				continue // the member was dropped: its room sends no more
			}
			sent[r]++
		}
	}
}

// read counts this run's messages of the member's room until the connection
// ends; a publisher's error frames count as refusals. Arrival time is read
// once per read of the socket, as in subscriber.read.
func (m *roomMember) read(prefix []byte) {
	var now int64
	reads := ^uint64(0)
	for {
		f, err := m.c.readMessage()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				m.err = err
			}
			return
		}
		m.frames.Add(1)
		if r := m.c.rc.n; r != reads {
			reads, now = r, time.Now().UnixNano()
		}
		if bytes.HasPrefix(f, []byte(`{"type":`)) {
			if bytes.HasPrefix(f, []byte(`{"type":"error"`)) {
				m.rejected.Add(1)
			}
			continue // history or error frame, not an envelope
		}
		i := bytes.Index(f, prefix)
		if i < 0 {
			continue // presence, or another run's message
		}
		room, rest, ok := parseInt(f[i+len(prefix):])
		if !ok || len(rest) == 0 || rest[0] != '.' {
			continue
		}
		seq, sent, ok := parseBody(rest[1:])
		if !ok {
			continue
		}
		if room != m.room {
			m.misrouted++
			continue
		}
		if seq < 0 || seq >= int64(len(m.seen))*64 {
			continue
		}
		w, bit := seq/64, uint64(1)<<(seq%64)
		if m.seen[w]&bit != 0 {
			m.dups++
			continue
		}
		m.seen[w] |= bit
		if seq < m.last {
			m.reordered++
		} else {
			m.last = seq
		}
		m.hist.add(time.Duration(now - sent))
		m.n.Add(1)
	}
}

// perRoomRate is each room's rate, for the report.
func (r *RoomsResult) perRoomRate() float64 { return r.Rate / math.Max(float64(r.Rooms), 1) }
