// Package rediskeys names every Redis key and Pub/Sub channel chatserver
// uses, in one place, so the history store, the broker, presence, refs and
// bans cannot drift apart: the broker appends to the very list the history
// store reads, and every node must agree on every name.
//
// With P the configured prefix (redis.key_prefix, "chatserver:" by default),
// N a node number and ROOM a room name (which holds no ':'):
//
//	P+"history:"+ROOM      LIST of the room's envelopes, newest last (history store and broker)
//	P+"room:"+ROOM         Pub/Sub channel of the room (broker)
//	P+"nodes:seq"          counter; INCR gives each starting node its number (presence)
//	P+"nodes"              SET of the node numbers that may have members (presence)
//	P+"node:"+N            heartbeat string with a TTL (presence)
//	P+"node:"+N+":rooms"   SET of the rooms node N had members in (presence)
//	P+"members:"+ROOM      HASH "N:CLIENT_ID" → member JSON (presence)
//	P+"reap:"+N            lock string: the one node reaping dead node N (presence)
//	P+"ban:"+ROOM+":"+NAME ban of NAME in ROOM, with the ban's duration as TTL (bans)
//	P+"ref:"+ROOM+":"+HASH id of the frame a client ref was accepted as, with a TTL (refs)
//
// # Redis Cluster
//
// With Partitions > 0 (redis.cluster_addrs and redis.cluster_partitions) the
// names of a room carry a hash tag, so that all of a room's keys and its
// channel live in one hash slot — the publish script appends to the history
// list and SPUBLISHes on the channel in one step, which Redis Cluster allows
// only within one slot. The tag is not the room itself but the room's
// partition T = Partition(room) (FNV-1a of the room modulo Partitions),
// written {T}: every room of a partition shares a slot, so one sharded
// Pub/Sub connection per partition serves all its rooms (go-redis
// resubscribes a connection's channels with one SSUBSCRIBE, which must not
// span slots). The cluster names are:
//
//	P+"history:{T}"+ROOM        LIST, as above
//	P+"room:{T}"+ROOM           sharded Pub/Sub channel (SPUBLISH, SSUBSCRIBE)
//	P+"members:{T}"+ROOM        HASH, as above
//	P+"ban:{T}"+ROOM+":"+NAME   as above
//	P+"ref:{T}"+ROOM+":"+HASH   as above
//	P+"part:{T}"                sharded channel nobody publishes on: the first
//	                            channel of partition T's connection, which pins
//	                            it to the master of T's slot
//
// The node keys share one hash tag of their own, {nodes}, so they live in
// one slot, on one master, and are lost together — as on a single Redis:
//
//	P+"{nodes}nodes:seq"          counter, as above
//	P+"{nodes}nodes"              SET, as above
//	P+"{nodes}node:"+N            heartbeat, as above
//	P+"{nodes}node:"+N+":rooms"   SET, as above
//	P+"{nodes}reap:"+N            lock, as above
//	P+"{nodes}cluster:partitions" Partitions, set by the first node (SETNX);
//	                              a node configured otherwise refuses to start
//
// Spread over the masters, a master restarting empty could lose node X's
// heartbeat but not the nodes set naming X, and another node would reap X's
// live members (announcing them offline). Changing Partitions renames every
// room's keys: it is fixed for the life of a deployment's data, which the
// cluster:partitions key enforces. The prefix must hold no '{' or '}' in
// cluster mode (the config refuses it), or it would be the hash tag.
//
// The names are part of the data on disk and of the README (`redis-cli
// LRANGE chatserver:history:lobby`): changing one strands existing data, so
// keys_test.go pins every one byte for byte, single-Redis and cluster names.
package rediskeys

import (
	"hash/fnv"
	"strconv"
	"strings"
)

// Keys builds the names under one prefix. The zero value uses no prefix and
// the single-Redis names.
type Keys struct {
	// Prefix is put before every name; empty means none.
	Prefix string
	// Partitions is the number of hash-tag partitions rooms are spread over
	// in a Redis Cluster. Zero means a single Redis: no hash tags, the names
	// of before cluster support, byte for byte.
	Partitions int
}

// Cluster reports whether the names are a Redis Cluster's (hash-tagged).
func (k Keys) Cluster() bool { return k.Partitions > 0 }

// Partition is room's partition in a cluster (0 without one): FNV-1a of
// the name modulo Partitions, stable across nodes, versions and restarts.
func (k Keys) Partition(room string) int {
	if k.Partitions <= 0 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(room))
	return int(h.Sum32() % uint32(k.Partitions)) //nolint:gosec // Partitions is positive and small
}

// tag is what follows a room key's kind: "{T}" in a cluster, else "".
func (k Keys) tag(room string) string {
	if k.Partitions <= 0 {
		return ""
	}
	return PartitionTag(k.Partition(room))
}

// PartitionTag is the hash tag of partition n: "{n}".
func PartitionTag(n int) string { return "{" + strconv.Itoa(n) + "}" }

// PartitionChannel is the sharded channel that pins partition n's
// subscription connection to its slot's master (cluster only).
func (k Keys) PartitionChannel(n int) string { return k.Prefix + "part:" + PartitionTag(n) }

// History is the list holding room's history.
func (k Keys) History(room string) string { return k.Prefix + "history:" + k.tag(room) + room }

// Channel is room's Pub/Sub channel (sharded in a cluster).
func (k Keys) Channel(room string) string { return k.Prefix + "room:" + k.tag(room) + room }

// RoomOfChannel returns the room whose channel is ch, and whether ch is one.
func (k Keys) RoomOfChannel(ch string) (string, bool) {
	rest, ok := strings.CutPrefix(ch, k.Prefix+"room:")
	if !ok || k.Partitions <= 0 {
		return rest, ok
	}
	if !strings.HasPrefix(rest, "{") {
		return "", false
	}
	_, room, ok := strings.Cut(rest, "}")
	if !ok || k.Channel(room) != ch {
		return "", false
	}
	return room, true
}

// NodesTag is the hash tag of the node keys in a cluster.
const NodesTag = "{nodes}"

// node is the start of a node key: the prefix, and in a cluster NodesTag,
// so that every node key is in one slot (see the package doc).
func (k Keys) node() string {
	if k.Partitions <= 0 {
		return k.Prefix
	}
	return k.Prefix + NodesTag
}

// NodeSeq is the counter that numbers starting nodes.
func (k Keys) NodeSeq() string { return k.node() + "nodes:seq" }

// Nodes is the set of node numbers that may have members.
func (k Keys) Nodes() string { return k.node() + "nodes" }

// Node is node n's heartbeat.
func (k Keys) Node(n string) string { return k.node() + "node:" + n }

// NodeRooms is the set of rooms node n had members in.
func (k Keys) NodeRooms(n string) string { return k.node() + "node:" + n + ":rooms" }

// ClusterPartitions holds the Partitions of a cluster's data, set by the
// first node to start (cluster only: a single Redis has no partitions).
func (k Keys) ClusterPartitions() string { return k.Prefix + NodesTag + "cluster:partitions" }

// Members is the hash of room's members across nodes.
func (k Keys) Members(room string) string { return k.Prefix + "members:" + k.tag(room) + room }

// Reap is the lock a node takes to reap dead node n.
func (k Keys) Reap(n string) string { return k.node() + "reap:" + n }

// Ban is the key of the ban of name in room.
func (k Keys) Ban(room, name string) string {
	return k.Prefix + "ban:" + k.tag(room) + room + ":" + name
}

// Ref is the key of an accepted (or claimed) ref in room; hash names the
// sender and the ref (see broker.RedisRefs).
func (k Keys) Ref(room, hash string) string {
	return k.Prefix + "ref:" + k.tag(room) + room + ":" + hash
}
