package bench

import (
	"fmt"
	"time"
)

// serverSampler measures the server processes (a scenario's --pid) from
// /proc, the way fanout and rooms report them: RSS before the joins (base),
// and CPU time, write syscalls and RSS between begin (joins settled) and
// finish (deliveries drained); with the generator's own CPU over the same
// window. With no pids it still times the window, so GeneratorCPUPct is
// reported either way.
type serverSampler struct {
	pids                []int
	base, start, end    procSample
	selfStart, selfUsed time.Duration
}

// newServerSampler takes the base sample, before any connection is made.
func newServerSampler(pids []int) (*serverSampler, error) {
	base, err := readProcs(pids)
	if err != nil {
		return nil, fmt.Errorf("reading /proc for --pid: %w", err)
	}
	return &serverSampler{pids: pids, base: base}, nil
}

// begin starts the measured window.
func (s *serverSampler) begin() error {
	var err error
	if s.start, err = readProcs(s.pids); err != nil {
		return err
	}
	s.selfStart = selfCPU()
	return nil
}

// finish ends the measured window.
func (s *serverSampler) finish() error {
	var err error
	if s.end, err = readProcs(s.pids); err != nil {
		return err
	}
	s.selfUsed = selfCPU() - s.selfStart
	return nil
}

// generatorCPUPct is the generator's CPU use over the window, in % of a core.
func (s *serverSampler) generatorCPUPct() float64 {
	return 100 * s.selfUsed.Seconds() / s.end.at.Sub(s.start.at).Seconds()
}

// serverUse is what the server processes used over the window.
type serverUse struct {
	cpu          time.Duration
	cpuPct       float64 // % of a core
	writes       int64   // write syscalls; 0 if not known
	rssMB        float64 // at finish
	rssPerConnKB float64 // growth since base, per connection
}

// use is the servers' use over the window, with conns connections open;
// false if no pid was given (nothing was sampled).
func (s *serverSampler) use(conns int) (serverUse, bool) {
	if len(s.pids) == 0 {
		return serverUse{}, false
	}
	cpu := s.end.cpu - s.start.cpu
	u := serverUse{
		cpu:          cpu,
		cpuPct:       100 * cpu.Seconds() / s.end.at.Sub(s.start.at).Seconds(),
		rssMB:        float64(s.end.rssKB) / 1024,
		rssPerConnKB: float64(s.end.rssKB-s.base.rssKB) / float64(conns),
	}
	if s.end.writes >= 0 && s.start.writes >= 0 && s.end.writes > s.start.writes {
		u.writes = s.end.writes - s.start.writes
	}
	return u, true
}

// cpuPerUS is the CPU time per item in microseconds; 0 for no items.
func (u serverUse) cpuPerUS(n int64) float64 {
	if n <= 0 {
		return 0
	}
	return float64(u.cpu.Microseconds()) / float64(n)
}

// serverPIDs is pid and pids, without zeros.
func serverPIDs(pid int, pids []int) []int {
	var p []int
	for _, pid := range append([]int{pid}, pids...) {
		if pid != 0 {
			p = append(p, pid)
		}
	}
	return p
}
