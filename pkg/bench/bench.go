// Package bench is chatserver's load generator: fan-out (N subscribers in one
// room, P publishers at a fixed total rate) and idle connections (memory per
// connection, join storms). `chatserver bench` is its command line.
//
// It only talks to loopback addresses, every run is bounded in connections,
// messages and time, and it stops by itself. Clients are minimal (see wsConn)
// so that one generator core can drive one server core.
package bench

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Bounds on one run: the generator refuses more.
const (
	MaxConns      = 50000
	MaxPublishers = 1000
	MaxRate       = 1_000_000 // messages per second, all publishers together
	MaxDuration   = 10 * time.Minute
	MaxGenerators = 64 // generator processes meeting in one run (ConnsConfig.Sync)
)

// perSourceIP is how many connections share one source address before the
// generator moves to the next 127.0.0.x (a source address has ~28k ephemeral
// ports towards one server port).
const perSourceIP = 25000

// target checks that addr (HOST:PORT) is a loopback address and returns the
// WebSocket URL for room.
func target(addr, room string) (*url.URL, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return nil, badConfig(fmt.Errorf("refusing to load %s: %s is not a loopback address (the generator only targets 127.0.0.0/8 or ::1)", addr, ip))
		}
	}
	q := url.Values{"room": {room}}
	return &url.URL{Scheme: "ws", Host: net.JoinHostPort(ips[0].String(), port), Path: "/chatsocket", RawQuery: q.Encode()}, nil
}

// targets is the WebSocket URL of room on each server: addrs, or addr alone
// if addrs is empty. Each must be a loopback address.
func targets(addr string, addrs []string, room string) ([]*url.URL, error) {
	if len(addrs) == 0 {
		addrs = []string{addr}
	}
	urls := make([]*url.URL, len(addrs))
	for i, a := range addrs {
		var err error
		if urls[i], err = target(a, room); err != nil {
			return nil, err
		}
	}
	return urls, nil
}

// ErrBadConfig marks a scenario the generator refuses to run: out of bounds,
// or aimed at a non-loopback address.
var ErrBadConfig = errors.New("bad configuration")

func badConfig(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrBadConfig, err)
}

// checkLoad checks the bounds fanout and rooms share: the rate, the
// duration, and the settle and drain pauses.
func checkLoad(rate float64, duration, settle, drain time.Duration) error {
	switch {
	case !(rate > 0) || rate > MaxRate:
		return fmt.Errorf("rate: want (0, %d] messages per second, got %v", MaxRate, rate)
	case duration <= 0 || duration > MaxDuration:
		return fmt.Errorf("duration: want (0, %v], got %v", MaxDuration, duration)
	case drain > time.Minute || settle > time.Minute:
		return errors.New("settle and drain: at most 1m each")
	}
	return nil
}

// sourceIP is the source address of connection i of n: the kernel's choice
// up to perSourceIP connections, else 127.0.0.1, .2, … in turn.
func sourceIP(i, n int) net.IP {
	if n <= perSourceIP {
		return nil
	}
	k := (n + perSourceIP - 1) / perSourceIP
	return net.IPv4(127, 0, 0, byte(1+i%k))
}

// procSample is what /proc says about a process at one moment.
type procSample struct {
	at     time.Time
	cpu    time.Duration // utime + stime
	rssKB  int64
	writes int64 // write syscalls so far (/proc/PID/io syscw; -1 if unreadable)
}

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ; 100 on
// every Linux the generator runs on).
const clockTick = 10 * time.Millisecond

// readProc samples pid. pid 0 means "not given": the zero sample.
func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	if pid == 0 {
		return s, nil
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) may hold spaces; fields after it are plain.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 { // f[0] is field 3 (state); utime is field 14, stime 15
		return s, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.cpu = time.Duration(ut+st) * clockTick
	s.writes = -1
	if io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, l := range strings.Split(string(io), "\n") {
			if v, ok := strings.CutPrefix(l, "syscw:"); ok {
				s.writes, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	fh, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb := strings.Fields(rest)
			if len(kb) > 0 {
				s.rssKB, _ = strconv.ParseInt(kb[0], 10, 64)
			}
		}
	}
	return s, sc.Err()
}

// readProcs samples every process of pids and sums them: CPU, RSS and
// write syscalls (-1 if any is unreadable). No pids: the zero sample.
func readProcs(pids []int) (procSample, error) {
	sum := procSample{at: time.Now()}
	for _, pid := range pids {
		s, err := readProc(pid)
		if err != nil {
			return sum, fmt.Errorf("pid %d: %w", pid, err)
		}
		sum.cpu += s.cpu
		sum.rssKB += s.rssKB
		if s.writes < 0 || sum.writes < 0 {
			sum.writes = -1
		} else {
			sum.writes += s.writes
		}
		sum.at = s.at
	}
	return sum, nil
}

// selfCPU is the CPU time this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// LoadAvg returns /proc/loadavg's first three fields, for the record.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// Machine describes where the run happened.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	LoadAvg  string `json:"loadavg"`
	Go       string `json:"go"`
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), LoadAvg: LoadAvg(), Go: runtime.Version(), CPUModel: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// histogram counts latencies in log-linear buckets: 32 sub-buckets per power
// of two of microseconds, so a percentile is exact to ~3% with a few KB per
// histogram and no allocation per sample.
type histogram struct {
	counts [64 * histSub]uint32
	n      uint64
	max    time.Duration
}

const histSub = 32

func histIndex(us uint64) int {
	if us < histSub {
		return int(us)
	}
	e := bits.Len64(us) - 1 - 5 // us>>e is in [32, 64)
	return (e+1)*histSub + int(us>>e) - histSub
}

// histLow is the smallest value of bucket i, in µs.
func histLow(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	return uint64(i%histSub+histSub) << e
}

func (h *histogram) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d/time.Microsecond))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the q-quantile (0 < q <= 1): the lower edge of the bucket
// that holds it, capped at the maximum seen.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= rank {
			d := time.Duration(histLow(i)) * time.Microsecond
			if d > h.max {
				d = h.max
			}
			return d
		}
	}
	return h.max
}

// Latency summarises a histogram, in milliseconds.
type Latency struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func (h *histogram) summary() Latency {
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	return Latency{P50: ms(h.quantile(0.50)), P90: ms(h.quantile(0.90)), P99: ms(h.quantile(0.99)), Max: ms(h.max)}
}
