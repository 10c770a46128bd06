package bench

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ConnsConfig is one idle-connections scenario: Conns members join Rooms
// rooms (a join storm when Rooms is 1), stay idle for Hold, and leave.
type ConnsConfig struct {
	// Addr is the server's HOST:PORT; it must be a loopback address.
	Addr string
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
}

// Conns runs the scenario. It stops by itself after the joins, Settle and
// Hold; ctx ends it sooner.
func Conns(ctx context.Context, cfg ConnsConfig) (*ConnsResult, error) {
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
	switch {
	case cfg.Conns < 1 || cfg.Conns > MaxConns:
		return nil, badConfig(fmt.Errorf("conns: want 1..%d, got %d", MaxConns, cfg.Conns))
	case cfg.Rooms < 1 || cfg.Rooms > cfg.Conns:
		return nil, badConfig(fmt.Errorf("rooms: want 1..conns, got %d", cfg.Rooms))
	case cfg.Hold < 0 || cfg.Hold > MaxDuration || cfg.Settle > time.Minute:
		return nil, badConfig(fmt.Errorf("hold: want [0, %v] and settle at most 1m", MaxDuration))
	}
	// The Go runtime has already raised the soft limit to the hard one
	// (since Go 1.19); what the hard limit forbids, fail on now, not midway.
	limit, err := fileLimit()
	if err != nil {
		return nil, fmt.Errorf("reading the file limit: %w", err)
	}
	if uint64(cfg.Conns)+64 > limit {
		return nil, fmt.Errorf("conns: %d connections need more than this process's file limit of %d", cfg.Conns, limit)
	}
	urls := make([]*url.URL, cfg.Rooms)
	for i := range urls {
		room := cfg.Room
		if cfg.Rooms > 1 {
			room += "-" + strconv.Itoa(i)
		}
		if urls[i], err = target(cfg.Addr, room); err != nil {
			return nil, err
		}
	}
	base, err := readProc(cfg.PID)
	if err != nil {
		return nil, fmt.Errorf("reading /proc for --pid %d: %w", cfg.PID, err)
	}

	res := &ConnsResult{Scenario: "conns", Conns: cfg.Conns, Rooms: cfg.Rooms, Compress: cfg.Compress}
	res.LocalAddrs = 1
	if cfg.Conns > perSourceIP {
		res.LocalAddrs = (cfg.Conns + perSourceIP - 1) / perSourceIP
	}
	var frames atomic.Int64 // frames received after the history frames
	closed := make([]bool, cfg.Conns)
	var readers sync.WaitGroup
	start := time.Now()
	o := dialOptions{compress: cfg.Compress, readBuffer: 1024}
	conns, err := dialAll(ctx, func(i int) *url.URL { return urls[i%cfg.Rooms] }, cfg.Conns, cfg.DialConcurrency, o,
		func(i int, c *wsConn) {
			readers.Add(1)
			go func() { // idle member: read presence until the end
				defer readers.Done()
				for {
					if _, err := c.readMessage(); err != nil {
						if _, ok := err.(errClosed); ok {
							closed[i] = true
						}
						return
					}
					frames.Add(1)
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
	select {
	case <-time.After(cfg.Settle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	end, err := readProc(cfg.PID)
	if err != nil {
		return nil, err
	}
	res.FramesPerConn = float64(frames.Load()) / float64(cfg.Conns)
	if cfg.PID != 0 {
		res.ServerCPUS = (end.cpu - base.cpu).Seconds()
		res.ServerRSSMB = float64(end.rssKB) / 1024
		res.BaseRSSMB = float64(base.rssKB) / 1024
		res.RSSPerConnKB = float64(end.rssKB-base.rssKB) / float64(cfg.Conns)
	}
	res.Machine = machine()
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
	return res, nil
}

// fileLimit is this process's soft limit on open files.
func fileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return rl.Cur, nil
}
