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
// The names are part of the data on disk and of the README (`redis-cli
// LRANGE chatserver:history:lobby`): changing one strands existing data, so
// keys_test.go pins every one byte for byte.
package rediskeys

import "strings"

// Keys builds the names under one prefix. The zero value uses no prefix.
type Keys struct {
	// Prefix is put before every name; empty means none.
	Prefix string
}

// History is the list holding room's history.
func (k Keys) History(room string) string { return k.Prefix + "history:" + room }

// Channel is room's Pub/Sub channel.
func (k Keys) Channel(room string) string { return k.Prefix + "room:" + room }

// RoomOfChannel returns the room whose channel is ch, and whether ch is one.
func (k Keys) RoomOfChannel(ch string) (string, bool) {
	return strings.CutPrefix(ch, k.Prefix+"room:")
}

// NodeSeq is the counter that numbers starting nodes.
func (k Keys) NodeSeq() string { return k.Prefix + "nodes:seq" }

// Nodes is the set of node numbers that may have members.
func (k Keys) Nodes() string { return k.Prefix + "nodes" }

// Node is node n's heartbeat.
func (k Keys) Node(n string) string { return k.Prefix + "node:" + n }

// NodeRooms is the set of rooms node n had members in.
func (k Keys) NodeRooms(n string) string { return k.Prefix + "node:" + n + ":rooms" }

// Members is the hash of room's members across nodes.
func (k Keys) Members(room string) string { return k.Prefix + "members:" + room }

// Reap is the lock a node takes to reap dead node n.
func (k Keys) Reap(n string) string { return k.Prefix + "reap:" + n }

// Ban is the key of the ban of name in room.
func (k Keys) Ban(room, name string) string { return k.Prefix + "ban:" + room + ":" + name }

// Ref is the key of an accepted (or claimed) ref in room; hash names the
// sender and the ref (see broker.RedisRefs).
func (k Keys) Ref(room, hash string) string { return k.Prefix + "ref:" + room + ":" + hash }
