package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ConnsConfig is one idle-connections scenario: Conns members join Rooms
// rooms (a join storm when Rooms is 1), stay idle for Hold, and leave.
//
// Several generator processes can share one run over the nodes of a cluster
// (Addrs, Offset, Sync) and check that a message posted to each room reaches
// every member of it (Check, Post): see conns_check.go.
type ConnsConfig struct {
	// Addr is the server's HOST:PORT; it must be a loopback address.
	Addr string
	// Addrs, if not empty, replaces Addr with several servers (the nodes of
	// one cluster), all loopback: member j (see Offset) is on Addrs[j % len].
	Addrs []string
	// Offset is the number of this generator's first member among all the
	// generators of a run: member j = Offset+i joins node j % len(Addrs) and
	// room (j / len(Addrs)) % Rooms, so generators given disjoint ranges
	// [Offset, Offset+Conns) hold disjoint members and every room has
	// members on every node. Default 0.
	Offset int
	// Room is the room name, or its prefix when Rooms > 1. Default "idle".
	Room string
	// Conns is the number of connections. Default 1000.
	Conns int
	// Rooms spreads the connections over this many rooms. Default 1.
	Rooms int
	// Settle is the pause after the last join before the server's RSS is read
	// (presence traffic ends, the server's GC runs). Default 3s.
	Settle time.Duration
	// Hold keeps the connections open this long after measuring. Default 0.
	Hold time.Duration
	// Compress offers permessage-deflate on every connection.
	Compress bool
	// PID, if not zero, is the server's process: its RSS and CPU time are
	// sampled before the first connection and after the last settled.
	PID int
	// PIDs are the servers' processes in the order of Addrs (one per
	// address; PID, if set, counts as the first): each node's RSS is
	// reported, and per connection over the members on that node.
	PIDs []int
	// Sync, if set, is a folder shared by Generators processes of one run;
	// they meet there before the first dial (every node's RSS baseline is
	// read before anyone joins), after joining, and after the check.
	Sync string
	// Generators is how many processes meet in Sync. Default 1.
	Generators int
	// Check, if set, is the run's tag and turns on the delivery check: once
	// every generator has joined, each member must receive its room's check
	// message (body "CHECK.ROOM.UNIXNANO.") exactly once, and no other.
	Check string
	// Post makes this generator post the check messages, one per room
	// 0..Rooms-1, through the server API with APIKey, round-robin over the
	// nodes. Exactly one generator of a run posts.
	Post bool
	// APIKey is the server API's bearer key (api.keys of the nodes).
	APIKey string
	// CheckTimeout bounds the wait for the check's deliveries. Default 30s.
	CheckTimeout time.Duration
	// DialConcurrency bounds simultaneous handshakes. Default 200.
	DialConcurrency int
}

// ConnsResult is what one connections run measured.
type ConnsResult struct {
	Scenario      string  `json:"scenario"`
	Conns         int     `json:"conns"`
	Rooms         int     `json:"rooms"`
	Compress      bool    `json:"compress"`
	JoinS         float64 `json:"join_s"` // every connection upgraded and its history frame received
	JoinsPerS     float64 `json:"joins_per_s"`
	ServerCPUS    float64 `json:"server_cpu_s,omitempty"` // from the first join to the end of Settle
	ServerRSSMB   float64 `json:"server_rss_mb,omitempty"`
	BaseRSSMB     float64 `json:"server_base_rss_mb,omitempty"`
	RSSPerConnKB  float64 `json:"server_rss_kb_per_conn,omitempty"`
	LocalAddrs    int     `json:"source_addresses"`
	Disconnected  int     `json:"disconnected"` // connections the server closed before the end
	Machine       Machine `json:"machine"`
	FramesPerConn float64 `json:"frames_per_conn"` // frames each connection received after its history frame, until measured (presence traffic)
	// JoinLatency is one member's join: its dial to its history frame.
	JoinLatency Latency `json:"join_latency"`
	// Servers is how many nodes the members were spread over; Offset and
	// Generators place this generator among the run's; TotalConns is all
	// the generators' connections (Conns when it is alone).
	Servers    int `json:"servers"`
	Offset     int `json:"offset"`
	Generators int `json:"generators"`
	TotalConns int `json:"total_conns"`
	// Nodes is each node's RSS, with PIDs (see NodeRSS).
	Nodes []NodeRSS `json:"nodes,omitempty"`
	// Check is the delivery check's outcome, with Check set.
	Check *CheckResult `json:"check,omitempty"`
}

// Conns runs the scenario. It stops by itself after the joins, Settle, the
// check and Hold; ctx ends it sooner.
func Conns(ctx context.Context, cfg ConnsConfig) (_ *ConnsResult, err error) {
	// The barrier comes before the options are checked: a generator that
	// refuses its own options fails in the folder too, so the others stop
	// waiting for it instead of waiting out MaxDuration.
	bar := newBarrier(cfg.Sync, cfg.Generators, cfg.Offset)
	defer func() {
		if err != nil {
			bar.fail(err) // the other generators stop waiting for this one
		}
	}()
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	bar.n = cfg.Generators // with its default
	// The Go runtime has already raised the soft limit to the hard one
	// (since Go 1.19); what the hard limit forbids, fail on now, not midway.
	limit, err := fileLimit()
	if err != nil {
		return nil, fmt.Errorf("reading the file limit: %w", err)
	}
	if uint64(cfg.Conns)+64 > limit {
		return nil, fmt.Errorf("conns: %d connections need more than this process's file limit of %d", cfg.Conns, limit)
	}
	addrs := cfg.addrs()
	urls := make([][]*url.URL, len(addrs)) // by node, then room
	for n, a := range addrs {
		urls[n] = make([]*url.URL, cfg.Rooms)
		for r := range urls[n] {
			if urls[n][r], err = target(a, cfg.roomName(r)); err != nil {
				return nil, err
			}
		}
	}
	pids := cfg.pids()
	base, err := readEach(pids)
	if err != nil {
		return nil, fmt.Errorf("reading /proc for --pid: %w", err)
	}
	// Every generator has read its baseline before anyone dials.
	if _, _, err := bar.meet(ctx, "armed", nil); err != nil {
		return nil, err
	}

	res := &ConnsResult{
		Scenario: "conns", Conns: cfg.Conns, Rooms: cfg.Rooms, Compress: cfg.Compress,
		Servers: len(addrs), Offset: cfg.Offset, Generators: cfg.Generators, TotalConns: cfg.Conns,
	}
	res.LocalAddrs = 1
	if cfg.Conns > perSourceIP {
		res.LocalAddrs = (cfg.Conns + perSourceIP - 1) / perSourceIP
	}
	var chk *checkState
	if cfg.Check != "" {
		chk = newCheckState(cfg)
	}
	var frames atomic.Int64 // frames received after the history frames
	closed := make([]bool, cfg.Conns)
	var readers sync.WaitGroup
	start := time.Now()
	o := dialOptions{compress: cfg.Compress, readBuffer: 1024}
	conns, err := dialAll(ctx, func(i int) *url.URL { n, r := cfg.place(i); return urls[n][r] }, cfg.Conns, cfg.DialConcurrency, o,
		func(i int, c *wsConn) {
			readers.Add(1)
			go func() { // idle member: read presence (and the check) until the end
				defer readers.Done()
				for {
					m, err := c.readMessage()
					if err != nil {
						if _, ok := err.(errClosed); ok {
							closed[i] = true
						}
						return
					}
					frames.Add(1)
					if chk != nil {
						chk.see(i, m)
					}
				}
			}()
		})
	res.JoinS = time.Since(start).Seconds()
	res.JoinsPerS = float64(cfg.Conns) / res.JoinS
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
		readers.Wait()
	}()
	if err != nil {
		return nil, err // dialAll closed what it had opened
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var joins histogram
	for _, c := range conns {
		joins.add(c.joined)
	}
	res.JoinLatency = joins.summary()
	select {
	case <-time.After(cfg.Settle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Every generator has joined and settled: the nodes hold every member.
	ready, allReady, err := bar.meet(ctx, "ready", []byte(fmt.Sprintf("%d %d\n", cfg.Offset, cfg.Conns)))
	if err != nil {
		return nil, err
	}
	perNode, total, err := membersPerNode(ready, cfg, len(addrs))
	if err != nil {
		return nil, err
	}
	res.TotalConns = total
	end, err := readEach(pids)
	if err != nil {
		return nil, err
	}
	res.FramesPerConn = float64(frames.Load()) / float64(cfg.Conns)
	if len(pids) > 0 {
		res.nodeRSS(addrs, pids, base, end, perNode)
	}
	res.Machine = machine()
	if chk != nil {
		res.Check = chk.run(ctx, cfg, addrs, allReady)
		if _, _, err := bar.meet(ctx, "checked", nil); err != nil {
			return nil, err
		}
	}
	select {
	case <-time.After(cfg.Hold):
	case <-ctx.Done():
	}
	for _, c := range conns {
		_ = c.nc.Close()
	}
	readers.Wait()
	for i := range conns {
		if closed[i] {
			res.Disconnected++
		}
	}
	if chk != nil {
		chk.finish(res.Check)
	}
	return res, nil
}

func (cfg *ConnsConfig) defaults() error {
	if cfg.Room == "" {
		cfg.Room = "idle"
	}
	if cfg.Conns == 0 {
		cfg.Conns = 1000
	}
	if cfg.Rooms == 0 {
		cfg.Rooms = 1
	}
	if cfg.Settle == 0 {
		cfg.Settle = 3 * time.Second
	}
	if cfg.DialConcurrency == 0 {
		cfg.DialConcurrency = 200
	}
	if cfg.Generators == 0 {
		cfg.Generators = 1
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = 30 * time.Second
	}
	var err error
	switch {
	case cfg.Conns < 1 || cfg.Conns > MaxConns:
		err = fmt.Errorf("conns: want 1..%d, got %d", MaxConns, cfg.Conns)
	case cfg.Offset < 0 || cfg.Offset > MaxGenerators*MaxConns:
		err = fmt.Errorf("offset: want 0..%d, got %d", MaxGenerators*MaxConns, cfg.Offset)
	case cfg.Generators < 1 || cfg.Generators > MaxGenerators || cfg.Generators > 1 && cfg.Sync == "":
		err = fmt.Errorf("generators: want 1..%d, and a --sync folder when more than 1", MaxGenerators)
	case cfg.Rooms < 1 || cfg.Rooms > cfg.Generators*cfg.Conns:
		err = fmt.Errorf("rooms: want 1..generators × conns (%d), got %d", cfg.Generators*cfg.Conns, cfg.Rooms)
	case cfg.DialConcurrency < 1 || cfg.DialConcurrency > MaxConns:
		err = fmt.Errorf("dial concurrency: want 1..%d, got %d", MaxConns, cfg.DialConcurrency)
	case cfg.Hold < 0 || cfg.Hold > MaxDuration || cfg.Settle > time.Minute:
		err = fmt.Errorf("hold: want [0, %v] and settle at most 1m", MaxDuration)
	case len(cfg.pids()) > 0 && len(cfg.pids()) != len(cfg.addrs()):
		err = fmt.Errorf("pid: want one per server address (%d), got %d", len(cfg.addrs()), len(cfg.pids()))
	case cfg.CheckTimeout < 0 || cfg.CheckTimeout > MaxDuration:
		err = fmt.Errorf("check timeout: want (0, %v]", MaxDuration)
	case cfg.Post && (cfg.Check == "" || cfg.APIKey == ""):
		err = errors.New("post: needs the check's tag and the server API's key")
	case strings.ContainsAny(cfg.Check, ".\"\\"):
		err = fmt.Errorf("check: the tag %q may not hold '.', '\"' or '\\'", cfg.Check)
	}
	return badConfig(err)
}

// addrs is Addrs, or Addr alone.
func (cfg *ConnsConfig) addrs() []string {
	if len(cfg.Addrs) > 0 {
		return cfg.Addrs
	}
	return []string{cfg.Addr}
}

// pids is PID and PIDs, without zeros.
func (cfg *ConnsConfig) pids() []int { return serverPIDs(cfg.PID, cfg.PIDs) }

// place is the node (an index into addrs) and the room of this generator's
// connection i: member j = Offset+i (see Offset).
func (cfg *ConnsConfig) place(i int) (node, room int) {
	return placeMember(cfg.Offset+i, len(cfg.addrs()), cfg.Rooms)
}

func placeMember(j, nodes, rooms int) (node, room int) {
	return j % nodes, (j / nodes) % rooms
}

// roomName is room r's name: Room, or Room-r with several rooms.
func (cfg *ConnsConfig) roomName(r int) string {
	if cfg.Rooms == 1 {
		return cfg.Room
	}
	return cfg.Room + "-" + strconv.Itoa(r)
}

// fileLimit is this process's soft limit on open files.
func fileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return rl.Cur, nil
}
