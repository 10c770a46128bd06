package broker

import (
	"context"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Rooms counts the members of every room with members on a live node (the
// server API's GET /api/rooms). It reads no key beyond those Members reads:
// the candidate rooms are the union of the live nodes' P+"node:"+N+":rooms"
// sets (which keep rooms a node once had members in, so they are only
// candidates), and each candidate's P+"members:"+ROOM hash is counted the
// way Members counts it — this node from its local view, the others by their
// fields. Rooms left with no member are left out. No SCAN: its cost would
// grow with everything else stored in the same Redis.
func (p *RedisPresence) Rooms(ctx context.Context) (map[string]int, error) {
	me := strconv.FormatInt(p.node, 10)
	out := map[string]int{}
	p.mu.Lock()
	for room, ms := range p.local {
		if len(ms) > 0 {
			out[room] = len(ms)
		}
	}
	p.mu.Unlock()

	nodes, err := p.rdb.SMembers(ctx, p.keys.Nodes()).Result()
	if err != nil {
		return out, err
	}
	others := nodes[:0]
	for _, n := range nodes {
		if n != me {
			others = append(others, n)
		}
	}
	if len(others) == 0 {
		return out, nil
	}
	pipe := p.rdb.Pipeline()
	alive := make([]*redis.IntCmd, len(others))
	rooms := make([]*redis.StringSliceCmd, len(others))
	for i, n := range others {
		alive[i] = pipe.Exists(ctx, p.keys.Node(n))
		rooms[i] = pipe.SMembers(ctx, p.keys.NodeRooms(n))
	}
	// On a cluster the keys below are spread over the masters: with one of
	// them down, what the others answer is counted (a node whose heartbeat
	// cannot be read is taken as alive, as Members does; a room whose hash
	// cannot be read is left out). On one Redis a failure is the answer.
	if _, err := pipe.Exec(ctx); err != nil && !p.keys.Cluster() {
		return out, err
	}
	live := map[string]bool{}
	candidates := map[string]bool{}
	for i, n := range others {
		if alive[i].Val() != 1 && alive[i].Err() == nil {
			continue
		}
		live[n] = true
		for _, r := range rooms[i].Val() {
			candidates[r] = true
		}
	}
	if len(candidates) == 0 {
		return out, nil
	}
	pipe = p.rdb.Pipeline()
	fields := map[string]*redis.StringSliceCmd{}
	for r := range candidates {
		fields[r] = pipe.HKeys(ctx, p.keys.Members(r))
	}
	if _, err := pipe.Exec(ctx); err != nil && !p.keys.Cluster() {
		return out, err
	}
	for r, cmd := range fields {
		for _, f := range cmd.Val() {
			if node, _, ok := strings.Cut(f, ":"); ok && live[node] {
				out[r]++
			}
		}
	}
	return out, nil
}
