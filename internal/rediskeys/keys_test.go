package rediskeys

import "testing"

// TestKeys pins every name byte for byte: existing data and the README's
// `redis-cli LRANGE chatserver:history:lobby` depend on them.
func TestKeys(t *testing.T) {
	k := Keys{Prefix: "chatserver:"}
	var zero Keys
	tests := []struct {
		name, got, want string
	}{
		{"history", k.History("lobby"), "chatserver:history:lobby"},
		{"channel", k.Channel("lobby"), "chatserver:room:lobby"},
		{"node seq", k.NodeSeq(), "chatserver:nodes:seq"},
		{"nodes", k.Nodes(), "chatserver:nodes"},
		{"node", k.Node("3"), "chatserver:node:3"},
		{"node rooms", k.NodeRooms("3"), "chatserver:node:3:rooms"},
		{"members", k.Members("lobby"), "chatserver:members:lobby"},
		{"reap", k.Reap("3"), "chatserver:reap:3"},
		{"ban", k.Ban("lobby", "bob"), "chatserver:ban:lobby:bob"},
		{"ref", k.Ref("lobby", "abc"), "chatserver:ref:lobby:abc"},
		{"no prefix", zero.History("lobby"), "history:lobby"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestRoomOfChannel(t *testing.T) {
	k := Keys{Prefix: "p:"}
	tests := []struct {
		name, ch, room string
		ok             bool
	}{
		{"own channel", k.Channel("lobby"), "lobby", true},
		{"other prefix", "q:room:lobby", "", false},
		{"history key", k.History("lobby"), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room, ok := k.RoomOfChannel(tt.ch)
			if ok != tt.ok || (ok && room != tt.room) {
				t.Fatalf("RoomOfChannel(%q) = %q, %v; want %q, %v", tt.ch, room, ok, tt.room, tt.ok)
			}
		})
	}
}

// TestClusterKeys pins the Redis Cluster names: a room's keys and channel
// carry its partition's hash tag, the node keys share the {nodes} tag.
func TestClusterKeys(t *testing.T) {
	k := Keys{Prefix: "chatserver:", Partitions: 64}
	tests := []struct {
		name, got, want string
	}{
		{"history", k.History("lobby"), "chatserver:history:{19}lobby"},
		{"channel", k.Channel("lobby"), "chatserver:room:{19}lobby"},
		{"members", k.Members("lobby"), "chatserver:members:{19}lobby"},
		{"ban", k.Ban("lobby", "bob"), "chatserver:ban:{19}lobby:bob"},
		{"ref", k.Ref("lobby", "abc"), "chatserver:ref:{19}lobby:abc"},
		{"other room", k.History("ops"), "chatserver:history:{27}ops"},
		{"partition channel", k.PartitionChannel(7), "chatserver:part:{7}"},
		{"node seq", k.NodeSeq(), "chatserver:{nodes}nodes:seq"},
		{"nodes", k.Nodes(), "chatserver:{nodes}nodes"},
		{"node", k.Node("3"), "chatserver:{nodes}node:3"},
		{"node rooms", k.NodeRooms("3"), "chatserver:{nodes}node:3:rooms"},
		{"reap", k.Reap("3"), "chatserver:{nodes}reap:3"},
		{"cluster partitions", k.ClusterPartitions(), "chatserver:{nodes}cluster:partitions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestClusterRoomOfChannel(t *testing.T) {
	k := Keys{Prefix: "p:", Partitions: 16}
	tests := []struct {
		name, ch, room string
		ok             bool
	}{
		{"own channel", k.Channel("lobby"), "lobby", true},
		{"untagged", "p:room:lobby", "", false},
		{"wrong partition", "p:room:{99}lobby", "", false},
		{"partition channel", k.PartitionChannel(3), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room, ok := k.RoomOfChannel(tt.ch)
			if ok != tt.ok || (ok && room != tt.room) {
				t.Fatalf("RoomOfChannel(%q) = %q, %v; want %q, %v", tt.ch, room, ok, tt.room, tt.ok)
			}
		})
	}
}
