package server

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/chatserver/chatserver/pkg/config"
)

// Reasons of chatserver_refused_total.
const (
	refusedConnsPerIP    = "conns_per_ip"
	refusedHandshakeRate = "handshake_rate"
	refusedMaxRooms      = "max_rooms"
	refusedRoomFull      = "room_full"
)

// limiter enforces config.Limits on WebSocket handshakes: open connections
// and handshake rate per client address. Its maps hold only addresses that
// have a connection open or a bucket not yet refilled, so an attacker cycling
// through addresses cannot grow them without bound: idle entries are swept at
// most once a minute, on the admission path (no goroutine to own).
type limiter struct {
	cfg config.Limits

	mu        sync.Mutex
	conns     map[netip.Prefix]int
	buckets   map[netip.Prefix]*rate.Limiter
	lastSweep time.Time
}

func newLimiter(cfg config.Limits) *limiter {
	return &limiter{
		cfg:       cfg,
		conns:     map[netip.Prefix]int{},
		buckets:   map[netip.Prefix]*rate.Limiter{},
		lastSweep: time.Now(),
	}
}

// clientKey is the address limits count against: the IPv4 address, or the
// /64 of an IPv6 address (one host usually owns a whole /64). ok is false for
// an address that cannot be parsed or is exempt (loopback, when configured).
func (l *limiter) clientKey(remoteAddr string) (netip.Prefix, bool) {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	if l.cfg.ExemptLoopback && ip.IsLoopback() {
		return netip.Prefix{}, false
	}
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p, true
}

// refusal is why a handshake was refused, and how to answer it.
type refusal struct {
	reason     string
	status     int
	msg        string
	retryAfter time.Duration
}

// acquire admits a handshake from remoteAddr or says why not. On success the
// caller must call release once the connection ends.
func (l *limiter) acquire(remoteAddr string) (release func(), ref *refusal) {
	key, ok := l.clientKey(remoteAddr)
	if !ok {
		return func() {}, nil
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	if hp := l.cfg.HandshakesPerIP; hp.Rate > 0 {
		b := l.buckets[key]
		if b == nil {
			b = rate.NewLimiter(rate.Limit(hp.Rate), hp.Burst)
			l.buckets[key] = b
		}
		if !b.AllowN(now, 1) {
			wait := time.Duration(math.Ceil(1/hp.Rate)) * time.Second
			return nil, &refusal{refusedHandshakeRate, http.StatusTooManyRequests,
				fmt.Sprintf("too many connection attempts from your address (limit %g/s, burst %d): retry later", hp.Rate, hp.Burst), wait}
		}
	}
	if max := l.cfg.MaxConnsPerIP; max > 0 && l.conns[key] >= max {
		return nil, &refusal{refusedConnsPerIP, http.StatusTooManyRequests,
			fmt.Sprintf("too many open connections from your address (limit %d): close one first", max), 5 * time.Second}
	}
	l.conns[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			if l.conns[key]--; l.conns[key] <= 0 {
				delete(l.conns, key)
			}
			l.mu.Unlock()
		})
	}, nil
}

// sweep drops buckets that have refilled (they are as good as new). Called
// under l.mu.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(b.Burst()) {
			delete(l.buckets, k)
		}
	}
}

// roomRefusal checks the node-wide caps on rooms and members for a client
// about to join roomName. It is a check before the upgrade, not a
// reservation: handshakes in flight at the same moment may overshoot a cap
// by their number.
func (s *Server) roomRefusal(roomName string) *refusal {
	lim := s.cfg.Limits
	if lim.MaxRooms <= 0 && lim.MaxMembersPerRoom <= 0 {
		return nil
	}
	n := s.hub.size(roomName)
	if n == 0 { // a new room: the hub drops rooms with no members
		if lim.MaxRooms > 0 && s.hub.count() >= lim.MaxRooms {
			return &refusal{refusedMaxRooms, http.StatusServiceUnavailable,
				fmt.Sprintf("this server holds its maximum of %d rooms: join an existing room or retry later", lim.MaxRooms), 30 * time.Second}
		}
		return nil
	}
	if lim.MaxMembersPerRoom > 0 && n >= lim.MaxMembersPerRoom {
		return &refusal{refusedRoomFull, http.StatusServiceUnavailable,
			fmt.Sprintf("room %s is full (%d members): retry later", roomName, lim.MaxMembersPerRoom), 30 * time.Second}
	}
	return nil
}

// admit applies every limit to a WebSocket handshake. When it refuses, it has
// answered the request (429 or 503 with a one-line reason and Retry-After)
// and counted the refusal; otherwise the caller must call release when the
// connection ends.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, roomName string) (release func(), ok bool) {
	release, ref := s.limiter.acquire(r.RemoteAddr)
	if ref == nil {
		if ref = s.roomRefusal(roomName); ref != nil {
			release()
		}
	}
	if ref != nil {
		s.metrics.Refused.WithLabelValues(ref.reason).Inc()
		if ref.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(ref.retryAfter/time.Second)))
		}
		http.Error(w, ref.msg, ref.status)
		return nil, false
	}
	return release, true
}
