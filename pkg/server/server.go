// Package server is chatserver's transport: the HTTP routes (chi), the
// WebSocket endpoint, rooms, clients and fan-out. It runs events through the
// pipelines of package pipeline and reaches history and other nodes only
// through the history.Store and broker.Broker interfaces.
package server

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/chatserver/chatserver"
	"github.com/chatserver/chatserver/pkg/broker"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/history"
	"github.com/chatserver/chatserver/pkg/metrics"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// DefaultRoom is the room of a connection that names none.
const DefaultRoom = "lobby"

// ValidRoom reports whether name is a room name: 1–64 of [A-Za-z0-9_.-].
func ValidRoom(name string) bool {
	if len(name) < 1 || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch b := name[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '_', b == '.', b == '-':
		default:
			return false
		}
	}
	return true
}

// Options are what a Server takes besides its config. The zero value is
// valid: a memory or configured store, the local broker, slog's default logger.
type Options struct {
	// Logger receives the server's logs. Nil: slog.Default().
	Logger *slog.Logger
	// Store overrides the history store the config selects.
	Store history.Store
	// Broker overrides the broker the config selects. It is given the hub's
	// deliver function by NewBroker.
	NewBroker func(store history.Store, deliver broker.DeliverFunc) (broker.Broker, error)
}

// Server is one chatserver node.
type Server struct {
	cfg       *config.Config
	log       *slog.Logger
	metrics   *metrics.Metrics
	store     history.Store
	broker    broker.Broker
	hub       *hub
	limiter   *limiter
	templates *template.Template
	upgrader  websocket.Upgrader
	pipelines atomic.Pointer[pipeline.Pipelines]
	handler   http.Handler
	clientSeq atomic.Int64
	// clientBase is added to clientSeq: node-scoped ids with broker redis.
	clientBase int64
	// presence exists with broker redis (see cluster.go).
	presence clusterPresence
	// rdb is the server's one Redis client, shared by the history store,
	// broker, presence, refs and bans; nil when none of them uses Redis.
	// Shutdown closes it after all of them.
	rdb redis.UniversalClient
	// redisBroker is set when the Redis broker is in use (broker.type redis,
	// on one Redis or a Redis Cluster): refs and bans then live in Redis
	// too, so every node sees them.
	redisBroker bool
	refs        broker.Refs // accepted refs: resends are acked, not run again (inbound.go)
	flush       *flushClock // nil: websocket.write_delay is 0
	linger      *flushClock // times idle writers' exit (see client.writeLoop)
	// presenceAllowance is how many presence frames may wait for a client
	// beyond websocket.send_queue (see client.enqueue).
	presenceAllowance int
	// poller lets idle connections wait without a goroutine
	// (fast_paths.idle_poller); started by the first reader that parks,
	// stopped by Shutdown once the connections are gone. Nil until then,
	// or when off, not built, or it failed to start (see idlePoller).
	pollerOn   bool
	pollerOnce sync.Once
	poller     *idlePoller
	armFailed  atomic.Bool // an arm failed: logged once
	// epoch starts the server's monotonic clock (see clock).
	epoch time.Time

	// stopping is closed at shutdown (then closeAll sends every client 1001):
	// writers stop pacing, shorten their deadlines, and late joiners close.
	stopping chan struct{}
	mu       sync.Mutex
	closed   bool
	conns    sync.WaitGroup // live WebSocket connections
	httpSrv  *http.Server

	shutdownOnce sync.Once
	shutdownErr  error

	// The server API (api.go): its keys, the bans its kicks record, and
	// the joins being run, whose online the publisher checks against the
	// bans (bans.go).
	apiKeys *apiKeys
	bans    broker.Bans
}

// New builds a server from cfg: templates, store, broker and pipelines. It
// does not listen; see Serve and ListenAndServe.
func New(cfg *config.Config, opts Options) (*Server, error) {
	s := &Server{
		cfg:      cfg,
		log:      opts.Logger,
		metrics:  metrics.New(),
		hub:      newHub(),
		limiter:  newLimiter(cfg.Limits),
		stopping: make(chan struct{}),
		epoch:    time.Now(),
		apiKeys:  newAPIKeys(cfg.API.AllKeys()),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	var err error
	if s.templates, err = loadTemplates(cfg.Templates.Dir); err != nil {
		return nil, &config.Error{Source: cfg.Source, Key: "templates.dir", Err: err}
	}
	if needsRedis(cfg, opts) {
		if s.rdb, err = NewRedisClient(cfg); err != nil {
			return nil, err
		}
		if cfg.Redis.Cluster() {
			if err := checkPartitions(s.rdb, cfg, 3*time.Second, s.log); err != nil {
				_ = s.rdb.Close()
				return nil, err
			}
		}
	}
	s.store = opts.Store
	if s.store == nil {
		if s.store, err = newStore(cfg, s.rdb, s.partitions(), s.log, s.metrics); err != nil {
			return nil, err
		}
	}
	s.hub.delivered = func(n int) { s.metrics.FramesOut.Add(float64(n)) }
	newBroker := opts.NewBroker
	if newBroker == nil {
		newBroker = s.newBrokerFor
	}
	if s.broker, err = newBroker(s.store, s.hub.deliver); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	s.bans = s.newBans()
	pending := broker.PendingTTL(cfg.Plugins.Timeout, cfg.WebSocket.RefTTL)
	if s.redisBroker {
		s.refs = broker.NewRedisRefs(s.rdb, cfg.Redis.KeyPrefix, s.partitions(), cfg.WebSocket.RefTTL, pending, s.log)
	} else {
		s.refs = broker.NewMemoryRefs(cfg.WebSocket.RefTTL, pending, 0)
	}
	s.hub.opened = func(room string) { _ = s.broker.Subscribe(context.Background(), room) }
	s.hub.closed = func(room string) { _ = s.broker.Unsubscribe(context.Background(), room) }
	s.hub.roomsChanged = func(n int) { s.metrics.Rooms.Set(float64(n)) }

	p, err := s.BuildPipelines(cfg.Pipelines)
	if err != nil {
		return nil, &config.Error{Source: cfg.Source, Err: err}
	}
	s.pipelines.Store(p)

	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.Limits.HandshakeTimeout,
		// ReadBufferSize stays 0: gorilla then reads through the buffer our
		// hijacker gives it (readBufferSize bytes; see hijacker.Hijack).
		WriteBufferPool:   &sync.Pool{},
		EnableCompression: cfg.WebSocket.Compression,
		CheckOrigin:       originChecker(cfg.Server.AllowedOrigins),
	}
	s.linger = &flushClock{period: lingerPeriod}
	s.pollerOn = pollerBuilt && cfg.FastPaths.IdlePoller && cfg.FastPaths.IdleReader
	s.presenceAllowance = cfg.WebSocket.PresenceLimit
	if s.presenceAllowance == 0 {
		s.presenceAllowance = defaultPresenceAllowance
	}
	if d := cfg.WebSocket.WriteDelay; d > 0 {
		s.flush = &flushClock{period: d}
	}
	s.handler = s.routes()
	return s, nil
}

// clock is the time since the server was built, in ns: monotonic (a step of
// the wall clock does not move it), for deadlines kept in atomics.
func (s *Server) clock() int64 { return int64(time.Since(s.epoch)) }

// idlePoller returns the server's idle poller, started on first use; nil
// when idle readers keep their goroutines (see Server.poller).
func (s *Server) idlePoller() *idlePoller {
	s.pollerOnce.Do(func() {
		if !s.pollerOn {
			return
		}
		p, err := newIdlePoller(func(err error) {
			s.log.Error("idle poller failed; idle connections keep a goroutine each from now on", "err", err)
		})
		if err != nil {
			s.log.Warn("idle connections keep a goroutine each", "err", err)
			return
		}
		s.poller = p
	})
	return s.poller
}

// readBufferSize is each connection's read buffer. Clients send little: a
// small buffer, instead of keeping the HTTP server's 4 KB one, is a large
// part of what an idle connection costs; bigger frames (up to
// websocket.max_message_bytes) are read through it in pieces.
const readBufferSize = 512

// idleTimeout is how long a client may send nothing, not even a pong, before
// it is closed: ping_interval + write_timeout.
func (s *Server) idleTimeout() time.Duration {
	return s.cfg.WebSocket.PingInterval + s.cfg.WebSocket.WriteTimeout
}

// newStore opens the history store the config names; a Redis store uses rdb,
// the server's client. A Redis store does not wait for Redis: it connects in
// the background (see history.Redis).
func newStore(cfg *config.Config, rdb redis.UniversalClient, partitions int, log *slog.Logger, m *metrics.Metrics) (history.Store, error) {
	switch cfg.History.Store {
	case "memory":
		return history.NewMemory(cfg.History.Size), nil
	case "redis":
		st, err := history.NewRedis(history.RedisOptions{
			Client: rdb, KeyPrefix: cfg.Redis.KeyPrefix, Partitions: partitions, Size: cfg.History.Size, Logger: log,
			CloseTimeout: cfg.Server.ShutdownTimeout / 2, // the rest is for the clients
			OnDropped:    func(n int) { m.HistoryDropped.Add(float64(n)) },
			OnQueueDepth: func(n int) { m.HistoryQueueDepth.Set(float64(n)) },
		})
		if err != nil {
			return nil, &config.Error{Source: cfg.Source, Key: "redis.url", Err: err}
		}
		return st, nil
	}
	return nil, &config.Error{Source: cfg.Source, Key: "history.store",
		Err: fmt.Errorf("store %q is not available in this build", cfg.History.Store)}
}

// BuildPipelines builds pipelines from pc with this server's services. Hot
// reload and `config check` use it too.
func (s *Server) BuildPipelines(pc pipeline.Config) (*pipeline.Pipelines, error) {
	return pipeline.Build(pc, s.Deps(), pipeline.BuildOptions{Observer: s.metrics, EventTimeout: s.cfg.Plugins.StepTimeout()})
}

// Deps are the services this server gives plugins.
func (s *Server) Deps() pipeline.Deps {
	return pipeline.Deps{
		Publisher: presencePublisher{Broker: s.broker, s: s},
		History:   s.store,
		Members:   membersFunc(s.members),
		Templates: s.templates,
		Logger:    s.log,
	}
}

// SwapPipelines replaces the running pipelines. Events already inside the old
// ones finish there; the old plugins are closed when the last of them is done.
func (s *Server) SwapPipelines(p *pipeline.Pipelines) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed { // a reload racing shutdown: nothing will run or close p
		_ = p.Close()
		return
	}
	if old := s.pipelines.Swap(p); old != nil {
		old.Retire()
	}
}

type membersFunc func(ctx context.Context, room string) ([]pipeline.Member, error)

func (f membersFunc) Members(ctx context.Context, room string) ([]pipeline.Member, error) {
	return f(ctx, room)
}

// Metrics returns the server's metrics (for tests and embedding programs).
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// Handler returns the server's HTTP handler, for httptest or a custom listener.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) nextClientID() int64 { return s.clientBase + s.clientSeq.Add(1) }

// track registers a new WebSocket connection; false once shutting down.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns.Add(1)
	return true
}

// loadTemplates parses index.html and message.html from dir, or the embedded
// copies when dir is "".
func loadTemplates(dir string) (*template.Template, error) {
	var fsys fs.FS
	if dir == "" {
		sub, err := fs.Sub(chatserver.Templates, "templates")
		if err != nil {
			return nil, err
		}
		fsys = sub
	} else {
		fsys = os.DirFS(dir)
	}
	t, err := template.New("").ParseFS(fsys, "*.html")
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	for _, name := range []string{"index.html", "message.html"} {
		if t.Lookup(name) == nil {
			return nil, fmt.Errorf("templates: %s is missing", name)
		}
	}
	return t, nil
}

// Serve accepts connections on ln until Shutdown. It returns nil after a
// graceful shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.httpSrv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.Limits.HandshakeTimeout, // slowloris
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	srv := s.httpSrv
	s.mu.Unlock()
	var err error
	if s.cfg.Server.TLS.Enabled() {
		err = srv.ServeTLS(ln, s.cfg.Server.TLS.CertFile, s.cfg.Server.TLS.KeyFile)
	} else {
		err = srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ListenAndServe listens on the configured address, logs it, and serves until
// ctx is cancelled; then it shuts down gracefully within
// server.shutdown_timeout.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Server.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	scheme := "http"
	if s.cfg.Server.TLS.Enabled() {
		scheme = "https"
	}
	s.log.Info("chatserver listening", "addr", ln.Addr().String(), "url", scheme+"://"+ln.Addr().String()+"/",
		"history", s.cfg.History.Store, "broker", s.cfg.Broker.Type)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	select {
	case err := <-errc:
		_ = s.Shutdown(context.Background())
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "timeout", s.cfg.Server.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.Server.ShutdownTimeout)
	defer cancel()
	err = s.Shutdown(sctx)
	if serr := <-errc; serr != nil && err == nil {
		err = serr
	}
	return err
}

// Shutdown stops accepting, closes every client with 1001, waits for their
// goroutines, then closes pipelines, broker and store (which flushes pending
// history). It is idempotent and honours ctx's deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		srv := s.httpSrv
		s.mu.Unlock()
		close(s.stopping)
		s.hub.closeAll(closeGoingAway, "server shutting down")

		var errs []error
		if srv != nil {
			if err := srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("http: %w", err))
			}
		}
		// Clients get half of what is left to close by themselves (1001,
		// flushing their queues); the rest is the history store's (it flushes
		// on Close). Connections still open then are cut: a client that
		// stopped reading must not cost the store its flush.
		done := make(chan struct{})
		go func() { s.conns.Wait(); close(done) }()
		clientCtx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			clientCtx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)/2))
		}
		select {
		case <-done:
		case <-clientCtx.Done():
			n := s.hub.cutAll()
			s.log.Warn("clients did not close in time; their connections were cut", "clients", n)
			select {
			case <-done:
			case <-ctx.Done():
				errs = append(errs, fmt.Errorf("waiting for clients: %w", ctx.Err()))
			}
		}
		cancel()
		s.pollerOnce.Do(func() {}) // no poller starts from now on
		if s.poller != nil {
			errs = append(errs, s.poller.close())
		}
		if p := s.pipelines.Load(); p != nil {
			errs = append(errs, p.Close())
		}
		if s.presence != nil {
			errs = append(errs, s.presence.Close())
		}
		errs = append(errs, s.broker.Close(), s.store.Close())
		if s.rdb != nil { // last: everything above used it
			errs = append(errs, s.rdb.Close())
		}
		s.shutdownErr = errors.Join(errs...)
	})
	return s.shutdownErr
}

// Pipelines returns the pipelines now in use.
func (s *Server) Pipelines() *pipeline.Pipelines { return s.pipelines.Load() }

// Close releases a server that never served (used by `config check`).
func (s *Server) Close() error { return s.Shutdown(context.Background()) }
