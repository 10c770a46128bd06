package server

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/chatserver/chatserver/pkg/broker"
	"github.com/chatserver/chatserver/pkg/history"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// This file wires `broker.type: redis`: the Redis broker, cluster-wide
// presence and node-scoped client ids.

// clusterPresence is what the server needs of cluster-wide presence.
type clusterPresence interface {
	Add(room string, m broker.Member)
	Remove(room string, clientID int64)
	Members(ctx context.Context, room string) ([]broker.Member, error)
	Rooms(ctx context.Context) (map[string]int, error)
	Node() int64
	Close() error
}

// subscriptionWaiter is implemented by brokers whose Subscribe completes
// later (broker.Redis, broker.RedisCluster): a joining client waits for it before reading history.
type subscriptionWaiter interface {
	WaitSubscribed(ctx context.Context, room string) error
}

// newBrokerFor returns the broker the config selects.
func (s *Server) newBrokerFor(store history.Store, deliver broker.DeliverFunc) (broker.Broker, error) {
	if s.cfg.Broker.Type != "redis" {
		l := broker.NewLocal(store, deliver, s.log)
		l.OnStoreError = func(string, error) { s.metrics.HistoryErrors.Inc() }
		l.OnKick = s.kickLocal
		l.Direct = s.hub.deliverDirect
		return l, nil
	}
	if s.rdb == nil { // New makes it whenever the config selects broker redis
		return nil, errors.New("broker redis without the server's Redis client")
	}
	s.redisBroker = true
	m := s.metrics
	opts := broker.RedisOptions{
		Client:        s.rdb,
		KeyPrefix:     s.cfg.Redis.KeyPrefix,
		Partitions:    s.partitions(),
		HistorySize:   s.cfg.History.Size,
		Deliver:       deliver,
		Kick:          s.kickLocal,
		Direct:        s.hub.deliverDirect,
		Log:           s.log,
		OnResubscribe: m.BrokerResubscribes.Inc,
		OnRecovered:   func(n int) { m.BrokerRecovered.Add(float64(n)) },
		OnFallback:    m.BrokerFallbacks.Inc,
		OnLag:         func(d time.Duration) { m.BrokerLag.Set(d.Seconds()) },
		OutboxSize:    s.cfg.Broker.OutboxSize,
		ReplayRate:    s.cfg.Broker.ReplayRate,
		GapFrame:      gapFrame,
		OnOutboxDepth: func(n int) { m.BrokerOutbox.Set(float64(n)) },
		OnOutboxDropped: func(n int) {
			m.BrokerOutboxDropped.Add(float64(n))
		},
		OnReplayed:     func(n int) { m.BrokerReplayed.Add(float64(n)) },
		PublishBatch:   s.cfg.Broker.PublishBatch,
		NoPublishBatch: s.cfg.Broker.PublishBatch == 0,
	}
	var b broker.Broker
	if s.cfg.Redis.Cluster() {
		b = broker.NewRedisCluster(opts)
	} else {
		b = broker.NewRedis(opts)
	}
	p := broker.NewRedisPresence(broker.RedisPresenceOptions{
		Client:     s.rdb,
		KeyPrefix:  s.cfg.Redis.KeyPrefix,
		Partitions: s.partitions(),
		TTL:        s.cfg.Broker.NodeTTL,
		Log:        s.log,
		OnExpired:  func(room string, mem broker.Member) { s.announceOffline(b, room, mem) },
	})
	s.presence = p
	s.clientBase = p.Node() * broker.ClientIDSpan
	s.log.Info("cluster node", "node", p.Node(), "first_client_id", s.clientBase+1)
	return b, nil
}

// partitions is the number of hash-tag partitions of the Redis keys: the
// config's redis.cluster_partitions on a Redis Cluster, 0 (plain names) on
// one Redis.
func (s *Server) partitions() int {
	if s.cfg.Redis.Cluster() {
		return s.cfg.Redis.ClusterPartitions
	}
	return 0
}

// gapFrame is the envelope that tells the members of room on other nodes,
// and history readers, that missed frames published on this node while Redis
// was unreachable were lost (the node's outbox overflowed):
// {"id":…,"type":"gap","room":…,"client_id":0,"username":"","data":{"missed":N},…}.
func gapFrame(room string, missed int) (id string, frame []byte) {
	env := pipeline.Envelope{ID: uuid.NewString(), Type: pipeline.TypeGap, Room: room,
		Data: json.RawMessage(`{"missed":` + strconv.Itoa(missed) + `}`)}
	env.Stamp(time.Now())
	return env.ID, env.AppendJSON(nil)
}

// announceOffline publishes `offline` for a member of a dead node.
func (s *Server) announceOffline(b broker.Broker, room string, m broker.Member) {
	env := pipeline.Envelope{ID: uuid.NewString(), Type: pipeline.TypeOffline, Room: room,
		ClientID: m.ClientID, Username: m.Username}
	env.Stamp(time.Now())
	frame := env.AppendJSON(nil) // as every envelope is encoded (no HTML escaping)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Publish(ctx, room, env.ID, frame, false); err != nil {
		s.log.Warn("publishing offline for a dead node's member", "room", room, "client_id", m.ClientID, "err", err)
	}
}

// present records c in cluster presence (after its join went through, and
// again on each rename).
func (s *Server) present(c *client) {
	if s.presence != nil {
		s.presence.Add(c.room, broker.Member{ClientID: c.id, Username: c.Username()})
	}
}

// members lists room's members: cluster-wide with broker redis, else the hub's.
func (s *Server) members(ctx context.Context, room string) ([]pipeline.Member, error) {
	if s.presence == nil {
		return s.hub.members(room), nil
	}
	ms, err := s.presence.Members(ctx, room)
	out := make([]pipeline.Member, len(ms))
	for i, m := range ms {
		out[i] = pipeline.Member{ClientID: m.ClientID, Username: m.Username}
	}
	return out, err
}
