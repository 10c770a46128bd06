package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/chatserver/chatserver/pkg/broker"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// Bans (the server API's kick with "ban"): a banned name cannot join the
// room until the ban ends. They live in Redis with broker redis, so every
// node enforces them (broker.RedisBans), else in this process
// (broker.MemoryBans, bounded).
//
// The check runs when a join is published: the join pipeline's broadcast
// step publishes the joiner's `online` once the username step resolved its
// name, and the server's publisher refuses that publish for a banned name
// (admitJoin). So a refused joiner is never announced, and, as for any
// refused join, it sees nothing of the room: it gets `error rejected` and a
// 4001 close, before any history.

// joins maps the envelope id of each join being run to its client, so the
// publisher can tell the join's own `online` from any other publish.
type joins struct{ m sync.Map }

// watch registers the join whose online envelope has id id; the returned
// function forgets it once the join pipeline returned.
func (j *joins) watch(id string, c *client) func() {
	j.m.Store(id, c)
	return func() { j.m.Delete(id) }
}

func (j *joins) client(id string) *client {
	c, _ := j.m.Load(id)
	cl, _ := c.(*client)
	return cl
}

// newBans returns the bans of this server: in Redis with broker redis (the
// server's Redis client, its key prefix), else in memory.
func (s *Server) newBans() broker.Bans {
	if s.rdb != nil {
		return broker.NewRedisBans(s.rdb, s.cfg.Redis.KeyPrefix)
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

// admitJoin is called by the server's publisher for every publish; for the
// online envelope of a join (id), whose joiner's name is resolved by now, it
// refuses a banned name: the error (`rejected`, marked errBanned) fails the
// join before anything is published, and serveWS answers it as any refused
// join, with a 4001 close. When the bans cannot be read (Redis down) the
// joiner is admitted — live chat goes on without Redis — and it is logged.
func (s *Server) admitJoin(ctx context.Context, id string) error {
	c := s.joining.client(id)
	if c == nil {
		return nil
	}
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
