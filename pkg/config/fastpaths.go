package config

// FastPaths turn off, one by one, the hand-written fast paths that stand in
// for library code on the hot path. Each is tested against what it replaces
// (differential and fuzz tests, run in CI both ways), so an upgrade of the
// library it mimics cannot silently break it; the switches let an operator
// rule one out without a rebuild when a bug is suspected. Every field
// defaults to true; false is the library's own way, slower or bigger.
type FastPaths struct {
	// IdleReader makes a connection's reader wait for the socket outside
	// gorilla's ReadMessage and take the client's pongs off the socket
	// itself (peeking with MSG_PEEK), so that an idle connection parks on a
	// 2 KB stack instead of 4 KB (linux/amd64 and arm64, not over TLS).
	// false: the reader parks in ReadMessage. Default true.
	IdleReader bool `mapstructure:"idle_reader"`
	// IdlePoller lets an idle connection wait with no goroutine at all: a
	// reader that finds its socket empty arms it in an epoll instance of
	// the server's and returns, and a new reader starts when the socket is
	// readable or closed (linux/amd64 and arm64, not over TLS; it needs
	// IdleReader). false: an idle connection's reader parks on its 2 KB
	// stack. Default true.
	IdlePoller bool `mapstructure:"idle_poller"`
	// FrameWriter makes a client's writer copy the frames it has queued,
	// each encoded once per room, into one buffer and write it in one
	// syscall (compressed frames are framed by gorilla into that buffer).
	// false: every frame is written by gorilla (WriteMessage, or
	// WritePreparedMessage when compressed), one write each. Default true.
	FrameWriter bool `mapstructure:"frame_writer"`
	// EnvelopeJSON encodes envelopes with a hand-written encoder instead of
	// encoding/json (reflection): byte for byte the same output. It is
	// process-wide: `chatserver serve` applies it at start (see
	// pipeline.SetFastJSON); a config reload does not change it.
	// Default true.
	EnvelopeJSON bool `mapstructure:"envelope_json"`
}
