package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chatserver/chatserver/pkg/broker"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// Bans (the server API's kick with "ban"): a banned name cannot join the
// room until the ban ends. They live in Redis with broker redis, so every
// node enforces them (broker.RedisBans), else in this process
// (broker.MemoryBans, bounded).
//
// The check runs twice in a join, both before anything of the room leaves
// the server: when the join's broadcast step publishes the joiner's own
// `online` (its name is resolved by then: the publisher refuses that publish
// for a banned name, so a banned joiner is never announced), and again once
// the join pipeline returned (a join pipeline without a broadcast step
// publishes nothing). A refused joiner, as any, gets `error rejected` and,
// for a ban, a 4001 close, before any history.
//
// Bans are by name: in plain mode, where anyone can take any name, a rename
// gets around them; they mean something in signed and jwt modes.

// newBans returns the bans of this server: in Redis with broker redis (the
// server's Redis client, its key prefix), else in memory.
func (s *Server) newBans() broker.Bans {
	if s.redisBroker {
		return broker.NewRedisBans(s.rdb, s.cfg.Redis.KeyPrefix, s.partitions())
	}
	return broker.NewMemoryBans(0)
}

// banCheckTimeout bounds the ban lookup of a join.
const banCheckTimeout = 2 * time.Second

// errBanned marks the refusal of a banned joiner: serveWS closes it with
// 4001 (joinRefusalClose).
var errBanned = errors.New("banned")

// joinRefusalClose is the close code and text of a refused join: 4001
// "banned" for a ban, else 1008.
func joinRefusalClose(err error) (int, string) {
	if errors.Is(err, errBanned) {
		return closeKicked, "banned"
	}
	return closePolicy, "join refused"
}

// admitJoin refuses c's join when its name (resolved by the join's username
// step) is banned from its room: the error (`rejected`, marked errBanned)
// fails the join, and serveWS answers it as any refused join, with a 4001
// close. When the bans cannot be read (Redis down) the joiner is admitted —
// live chat goes on without Redis — and it is logged.
func (s *Server) admitJoin(ctx context.Context, c *client) error {
	ctx, cancel := context.WithTimeout(ctx, banCheckTimeout)
	defer cancel()
	name := c.Username()
	banned, err := s.bans.Banned(ctx, c.room, name)
	if err != nil {
		s.log.Warn("join: bans unavailable; admitting", "room", c.room, "client_id", c.id, "err", err)
		return nil
	}
	if !banned {
		return nil
	}
	return fmt.Errorf("%w: %w", errBanned, pipeline.Reject(pipeline.CodeRejected, "you are banned from room %s", c.room))
}
