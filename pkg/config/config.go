// Package config is chatserver's configuration: plain structs decoded from YAML,
// the environment and flags, with defaults and validation in one place. viper
// stops here: other packages take a *Config, never a *viper.Viper.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// Config is the whole configuration file (config/chatserver.yaml documents every key).
type Config struct {
	Server    Server          `mapstructure:"server"`
	WebSocket WebSocket       `mapstructure:"websocket"`
	History   History         `mapstructure:"history"`
	Redis     Redis           `mapstructure:"redis"`
	Broker    Broker          `mapstructure:"broker"`
	Templates Templates       `mapstructure:"templates"`
	Limits    Limits          `mapstructure:"limits"`
	Pipelines pipeline.Config `mapstructure:"pipelines"`
	Plugins   Plugins         `mapstructure:"plugins"`
	API       API             `mapstructure:"api"`
	FastPaths FastPaths       `mapstructure:"fast_paths"`

	// Source names where the config came from ("embedded default" or a path),
	// for error messages.
	Source string `mapstructure:"-"`
}

// Server is the HTTP listener.
type Server struct {
	// Addr is host:port to listen on. Default "0.0.0.0:8000".
	Addr string `mapstructure:"addr"`
	// AllowedOrigins lists the Origins allowed to open a WebSocket. Empty
	// (the default) means same origin only; ["*"] allows any.
	AllowedOrigins []string `mapstructure:"allowed_origins"`
	// TLS serves https/wss when both files are set. Default off.
	TLS TLS `mapstructure:"tls"`
	// ShutdownTimeout bounds a graceful shutdown. Default 10s.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
}

// TLS names a certificate and its key (PEM files).
type TLS struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" && t.KeyFile != "" }

// WebSocket tunes each connection.
type WebSocket struct {
	// MaxMessageBytes is the largest inbound frame; a bigger one closes the
	// connection with 1009. Default 8192.
	MaxMessageBytes int64 `mapstructure:"max_message_bytes"`
	// SendQueue is the number of frames buffered per client; a client whose
	// queue is full is disconnected (1008). Online/offline frames have an
	// allowance of PresenceLimit more (join storms). Default 256.
	SendQueue int `mapstructure:"send_queue"`
	// PingInterval is how often the server pings; a client silent for
	// PingInterval+WriteTimeout is closed. Default 25s.
	PingInterval time.Duration `mapstructure:"ping_interval"`
	// WriteTimeout bounds one write to a client. Default 10s.
	WriteTimeout time.Duration `mapstructure:"write_timeout"`
	// WriteDelay is the longest a client's writer that is behind waits for
	// more frames before writing what it has. A writer that keeps up (its
	// last write carried one frame) writes each frame at once; one whose
	// last write carried several — frames arrive faster than one write each
	// — waits for the next tick of a clock of this period, so that one write
	// syscall carries every frame queued meanwhile (in a busy room, writes
	// are most of fan-out's cost). So only busy clients' deliveries wait, at
	// most this much longer. Zero: writers never wait, and a write carries
	// only what queued while the writer was busy. Default 10ms.
	WriteDelay time.Duration `mapstructure:"write_delay"`
	// Compression negotiates permessage-deflate when the client offers it.
	// Default true.
	Compression bool `mapstructure:"compression"`
	// BinaryFrames says what a binary frame gets: "error" (the default: an
	// `error invalid_json` frame, the connection stays open) or "close" (a
	// 1003 close, for deployments that want such clients gone).
	BinaryFrames string `mapstructure:"binary_frames"`
	// PresenceLimit bounds presence fan-out: in a room with more local members
	// than this, online/offline events are not broadcast (each costs one frame
	// per member, so a join storm of N members would cost N² frames); the
	// joiner still gets its own online frame, and /api/rooms/{room}/members
	// lists who is there. Zero means no limit. Default 1000.
	PresenceLimit int `mapstructure:"presence_limit"`
	// RefTTL is how long the ref of an accepted frame is remembered: a frame
	// resent with the same ref (from the same name, in the same room) within
	// it is acknowledged again with the first envelope's id, and not run,
	// delivered or stored again. Default 2m.
	RefTTL time.Duration `mapstructure:"ref_ttl"`
}

// History selects the history store.
type History struct {
	// Store is "memory" (default) or "redis".
	Store string `mapstructure:"store"`
	// Size is the number of messages kept per room. Default 100.
	Size int `mapstructure:"size"`
}

// Redis is the connection used by the redis store and broker.
type Redis struct {
	// URL is a redis:// or rediss:// URL. Default "redis://127.0.0.1:6379/0".
	URL string `mapstructure:"url"`
	// KeyPrefix namespaces every key. Default "chatserver:".
	KeyPrefix string `mapstructure:"key_prefix"`
	// ClusterAddrs are seed addresses of a Redis Cluster (host:port, or
	// redis:// / rediss:// URLs carrying the user, password and TLS of
	// every node). Set, every Redis use goes to the cluster and URL must be
	// left at its default; keys get hash tags (internal/rediskeys). Default
	// empty: one Redis at URL. Env: CHATSERVER_REDIS_CLUSTER_ADDRS, comma-separated.
	ClusterAddrs []string `mapstructure:"cluster_addrs"`
	// ClusterPartitions is the number of partitions rooms are spread over in
	// a cluster: each is a hash tag (one slot) and one sharded Pub/Sub
	// connection per node. It names the keys, so it is fixed for the life of
	// the data. Default 64.
	ClusterPartitions int `mapstructure:"cluster_partitions"`
}

// DefaultRedisURL is redis.url when the config leaves it out.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// Cluster reports whether the config selects a Redis Cluster.
func (r Redis) Cluster() bool { return len(r.ClusterAddrs) > 0 }

// Broker selects how events reach the members of a room.
type Broker struct {
	// Type is "local" (default, one node) or "redis" (nodes share rooms
	// through Redis Pub/Sub; needs history.store redis).
	Type string `mapstructure:"type"`
	// NodeTTL is how long a node may go without a heartbeat before the
	// others drop its members and announce them offline (broker redis only;
	// the heartbeat is every NodeTTL/3). Default 10s.
	NodeTTL time.Duration `mapstructure:"node_ttl"`
	// OutboxSize bounds the frames a node holds while Redis is unreachable,
	// to publish them when it is back (broker redis only; README: Scaling
	// out). When full, the oldest held frame is dropped, counted and
	// announced to the other nodes with a `gap` frame. Default 10000.
	OutboxSize int `mapstructure:"outbox_size"`
	// ReplayRate bounds the held frames a node publishes per second once
	// Redis is back (broker redis only): the other nodes' members get them
	// on top of live traffic, and a member whose send queue fills up is cut
	// off. It must exceed the node's publish rate. Default 1000.
	ReplayRate int `mapstructure:"replay_rate"`
	// PublishBatch is the most publishes a node sends to Redis in one round
	// trip (broker redis only): publishes waiting at the same moment go out
	// as one pipeline, so ingress is not one round trip per message. 0 turns
	// batching off (one round trip per publish). Default 256.
	PublishBatch int `mapstructure:"publish_batch"`
}

// Templates locates the page and message templates.
type Templates struct {
	// Dir is a folder holding index.html and message.html. Empty (the
	// default): the templates embedded in the binary.
	Dir string `mapstructure:"dir"`
}

// Plugins tunes how every pipeline step runs.
type Plugins struct {
	// Timeout bounds one event's run through its pipeline: the context given
	// to plugins is cancelled after it, so a plugin that waits (a webhook)
	// costs that one event, which fails with `error internal`. Plugins must
	// honour ctx; Go cannot stop one that does not. Zero means 5s.
	Timeout time.Duration `mapstructure:"timeout"`
}

// StepTimeout is Timeout with its default applied.
func (p Plugins) StepTimeout() time.Duration {
	if p.Timeout <= 0 {
		return DefaultPluginTimeout
	}
	return p.Timeout
}

// DefaultPluginTimeout is plugins.timeout when the config leaves it out.
const DefaultPluginTimeout = 5 * time.Second

// Limits bound what one client address and the whole node may hold, so that
// one attacker cannot exhaust the server. Refusals are answered before the
// WebSocket upgrade (429 or 503) and counted in chatserver_refused_total.
type Limits struct {
	// MaxConnsPerIP caps the open WebSocket connections of one client address
	// (IPv6 addresses are grouped by /64); over it: 429. Zero: no cap.
	// Default 100.
	MaxConnsPerIP int `mapstructure:"max_conns_per_ip"`
	// HandshakesPerIP is a token bucket on WebSocket handshakes per client
	// address; over it: 429 with Retry-After. A zero rate: no limit. Default
	// 10/s with bursts of 20.
	HandshakesPerIP RateLimit `mapstructure:"handshakes_per_ip"`
	// ExemptLoopback exempts 127.0.0.0/8 and ::1 from the per-address limits
	// (load tests open thousands of connections from loopback). Behind a
	// reverse proxy on the same host every client looks like loopback: set it
	// to false there, or limit at the proxy. Default true.
	ExemptLoopback bool `mapstructure:"exempt_loopback"`
	// MaxRooms caps the rooms with members on this node; a handshake that
	// would open one more gets 503. Zero: no cap. Default 10000.
	MaxRooms int `mapstructure:"max_rooms"`
	// MaxMembersPerRoom caps the members of one room on this node; over it:
	// 503. Zero: no cap. Default 25000.
	MaxMembersPerRoom int `mapstructure:"max_members_per_room"`
	// HandshakeTimeout bounds reading a request's headers (slowloris) and the
	// WebSocket upgrade. Default 10s.
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout"`
}

// RateLimit is a token bucket: Rate tokens per second, up to Burst at once.
type RateLimit struct {
	// Rate is tokens per second; zero disables the limit.
	Rate float64 `mapstructure:"rate"`
	// Burst is the bucket size; at least 1 when Rate is set.
	Burst int `mapstructure:"burst"`
}

// Error is a configuration error: the source, the key at fault and what is
// wrong. The CLI prints it on one line and exits 2.
type Error struct {
	Source string
	Key    string
	Err    error
}

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s: %v", e.Source, e.Err)
	}
	return fmt.Sprintf("%s: %s: %v", e.Source, e.Key, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Validate checks every field and returns the first problem as an *Error.
// Pipelines are checked by building them (see pipeline.Build), which needs
// the server's services; Validate checks only their shape.
func (c *Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return &Error{Source: c.Source, Key: key, Err: fmt.Errorf(format, args...)}
	}
	if c.Server.Addr == "" {
		return bad("server.addr", "must not be empty")
	}
	if (c.Server.TLS.CertFile == "") != (c.Server.TLS.KeyFile == "") {
		return bad("server.tls", "cert_file and key_file must be set together")
	}
	for _, f := range []struct{ key, path string }{
		{"server.tls.cert_file", c.Server.TLS.CertFile}, {"server.tls.key_file", c.Server.TLS.KeyFile},
	} {
		if f.path != "" {
			if _, err := os.Stat(f.path); err != nil {
				return bad(f.key, "%v", errors.Unwrap(err))
			}
		}
	}
	if c.Server.ShutdownTimeout <= 0 {
		return bad("server.shutdown_timeout", "must be positive, got %v", c.Server.ShutdownTimeout)
	}
	if c.WebSocket.MaxMessageBytes < 64 {
		return bad("websocket.max_message_bytes", "must be at least 64, got %d", c.WebSocket.MaxMessageBytes)
	}
	if c.WebSocket.SendQueue < 1 {
		return bad("websocket.send_queue", "must be at least 1, got %d", c.WebSocket.SendQueue)
	}
	switch c.WebSocket.BinaryFrames {
	case "error", "close":
	default:
		return bad("websocket.binary_frames", "must be error or close, got %q", c.WebSocket.BinaryFrames)
	}
	if c.WebSocket.PresenceLimit < 0 {
		return bad("websocket.presence_limit", "must be 0 (no limit) or more, got %d", c.WebSocket.PresenceLimit)
	}
	if c.WebSocket.PingInterval <= 0 {
		return bad("websocket.ping_interval", "must be positive, got %v", c.WebSocket.PingInterval)
	}
	if c.WebSocket.WriteDelay < 0 || c.WebSocket.WriteDelay > time.Second {
		return bad("websocket.write_delay", "must be between 0 and 1s, got %v", c.WebSocket.WriteDelay)
	}
	if c.WebSocket.RefTTL < time.Second {
		return bad("websocket.ref_ttl", "must be at least 1s, got %v", c.WebSocket.RefTTL)
	}
	if c.WebSocket.WriteTimeout <= 0 {
		return bad("websocket.write_timeout", "must be positive, got %v", c.WebSocket.WriteTimeout)
	}
	if err := c.Limits.validate(bad); err != nil {
		return err
	}
	switch c.History.Store {
	case "memory", "redis":
	default:
		return bad("history.store", "unknown store %q (known: memory, redis)", c.History.Store)
	}
	if c.History.Size < 1 {
		return bad("history.size", "must be at least 1, got %d", c.History.Size)
	}
	switch c.Broker.Type {
	case "local", "redis":
	default:
		return bad("broker.type", "unknown broker %q (known: local, redis)", c.Broker.Type)
	}
	if c.Broker.Type == "redis" && c.History.Store != "redis" {
		return bad("broker.type", "broker redis shares history between nodes: it needs history.store: redis")
	}
	if c.Broker.ReplayRate < 1 {
		return bad("broker.replay_rate", "must be at least 1, got %d", c.Broker.ReplayRate)
	}
	if c.Broker.PublishBatch < 0 {
		return bad("broker.publish_batch", "must be 0 (off) or more, got %d", c.Broker.PublishBatch)
	}
	if c.Broker.OutboxSize < 1 {
		return bad("broker.outbox_size", "must be at least 1, got %d", c.Broker.OutboxSize)
	}
	if c.Broker.NodeTTL < 300*time.Millisecond {
		return bad("broker.node_ttl", "must be at least 300ms, got %v", c.Broker.NodeTTL)
	}
	if err := c.Redis.validateCluster(bad); err != nil {
		return err
	}
	if (c.History.Store == "redis" || c.Broker.Type == "redis") && !c.Redis.Cluster() {
		u, err := url.Parse(c.Redis.URL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			return bad("redis.url", "not a redis:// URL: %q", c.Redis.URL)
		}
	}
	if err := c.API.validate(bad); err != nil {
		return err
	}
	if c.Plugins.Timeout < 0 {
		return bad("plugins.timeout", "must not be negative, got %v", c.Plugins.Timeout)
	}
	for _, kind := range c.Pipelines.Kinds() {
		if err := pipeline.CheckKind(kind); err != nil {
			return bad("pipelines."+string(kind), "%v", err)
		}
		for i, st := range c.Pipelines.Steps(kind) {
			if st.Use == "" {
				return bad(fmt.Sprintf("pipelines.%s[%d]", kind, i), "missing `use:`")
			}
		}
	}
	return nil
}

func (l *Limits) validate(bad func(key, format string, args ...any) error) error {
	for _, f := range []struct {
		key string
		n   int
	}{
		{"limits.max_conns_per_ip", l.MaxConnsPerIP},
		{"limits.max_rooms", l.MaxRooms},
		{"limits.max_members_per_room", l.MaxMembersPerRoom},
	} {
		if f.n < 0 {
			return bad(f.key, "must be 0 (no cap) or positive, got %d", f.n)
		}
	}
	if l.HandshakesPerIP.Rate < 0 {
		return bad("limits.handshakes_per_ip.rate", "must be 0 (no limit) or positive, got %v", l.HandshakesPerIP.Rate)
	}
	if l.HandshakesPerIP.Rate > 0 && l.HandshakesPerIP.Burst < 1 {
		return bad("limits.handshakes_per_ip.burst", "must be at least 1 when rate is set, got %d", l.HandshakesPerIP.Burst)
	}
	if l.HandshakeTimeout <= 0 {
		return bad("limits.handshake_timeout", "must be positive, got %v", l.HandshakeTimeout)
	}
	return nil
}

// validateCluster checks redis.cluster_addrs and redis.cluster_partitions.
// Both url and cluster_addrs set is an error naming both keys: which one a
// node would use must not be a guess. The url's default does not count as
// set (the embedded config has it), so a file that sets only cluster_addrs
// is fine.
func (r Redis) validateCluster(bad func(key, format string, args ...any) error) error {
	if r.ClusterPartitions < 1 || r.ClusterPartitions > 16384 {
		return bad("redis.cluster_partitions", "must be between 1 and 16384, got %d", r.ClusterPartitions)
	}
	if !r.Cluster() {
		return nil
	}
	if r.URL != "" && r.URL != DefaultRedisURL {
		return bad("redis.cluster_addrs", "redis.url and redis.cluster_addrs are both set; a cluster is reached through cluster_addrs alone (put its credentials and rediss:// in the addresses)")
	}
	if strings.ContainsAny(r.KeyPrefix, "{}") {
		return bad("redis.key_prefix", "must not hold '{' or '}' with redis.cluster_addrs: the braces would be the keys' hash tag, got %q", r.KeyPrefix)
	}
	var first *ClusterAddr
	for i, s := range r.ClusterAddrs {
		a, err := ParseClusterAddr(s)
		if err != nil {
			return bad(fmt.Sprintf("redis.cluster_addrs[%d]", i), "%v", err)
		}
		if !a.URL {
			continue
		}
		if first == nil {
			first = &a
		} else if a.Username != first.Username || a.Password != first.Password || a.TLS != first.TLS {
			return bad(fmt.Sprintf("redis.cluster_addrs[%d]", i), "every URL must give the same scheme, user and password (one client reaches every node)")
		}
	}
	return nil
}

// ClusterAddr is one parsed entry of redis.cluster_addrs.
type ClusterAddr struct {
	Addr               string // host:port
	Username, Password string // from a URL's user info
	TLS                bool   // rediss://
	URL                bool   // the entry was a URL
}

// ParseClusterAddr reads a cluster seed: host:port, or a redis:// or
// rediss:// URL with host:port and optional user info (no path, no query).
func ParseClusterAddr(s string) (ClusterAddr, error) {
	if !strings.Contains(s, "://") {
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" || port == "" {
			return ClusterAddr{}, fmt.Errorf("want host:port or a redis:// URL, got %q", s)
		}
		return ClusterAddr{Addr: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Port() == "" || u.Hostname() == "" {
		return ClusterAddr{}, fmt.Errorf("want host:port or redis[s]://[user:password@]host:port, got %q", redactURL(s))
	}
	if (u.Path != "" && u.Path != "/" && u.Path != "/0") || u.RawQuery != "" {
		return ClusterAddr{}, fmt.Errorf("a cluster has one database and takes no options in its addresses: %q", redactURL(s))
	}
	a := ClusterAddr{Addr: u.Host, TLS: u.Scheme == "rediss", URL: true}
	if u.User != nil {
		a.Username = u.User.Username()
		a.Password, _ = u.User.Password()
	}
	return a, nil
}

// redactURL hides a password in an error message.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}
