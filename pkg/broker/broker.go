// Package broker carries published frames to the members of a room: on one node
// (Local) or, in a cluster, to every node that has members in the room. It also
// keeps the room's history in publish order, so that history and live delivery
// never disagree. It knows nothing of WebSockets: frames are opaque bytes.
package broker

import (
	"context"
	"errors"
)

// DeliverFunc hands a frame to the local members of room. The hub implements
// it; it must not block on any client.
//
// kept says whether the frame is in the room's history: a joining client
// drops live frames its history frame already holds, and only a kept frame
// that is not among them proves that everything after it is new.
type DeliverFunc func(room, id string, frame []byte, kept bool)

// KickFunc closes every local connection of username in room, with close
// code 4001 (the server API's kick). The hub implements it; it must not block
// on any client.
type KickFunc func(room, username string)

// DirectFunc hands a direct message to the local connections of room whose
// member is named to, and to the connection with client id from (the
// sender's, if it is on this node). The hub implements it; it must not block.
type DirectFunc func(room string, frame []byte, to string, from int64)

// Broker publishes frames to rooms.
//
// Publish is safe for concurrent use. For one room, every member on every node
// receives frames in one order, and when keep is true the frame is appended to
// the room's history in that same order. A node's own publishes are delivered to
// its local members exactly once.
//
// Subscribe and Unsubscribe tell the broker which rooms this node has members
// in; a broker that spans nodes uses them to receive only those rooms.
//
// PublishDirect carries a direct message to the connections of the members
// of room named to, and to the sender's connection (client id from), on every
// node; it is never kept, and ordered with the room's other frames.
type Broker interface {
	Publish(ctx context.Context, room, id string, frame []byte, keep bool) error
	PublishDirect(ctx context.Context, room string, frame []byte, to string, from int64) error
	Subscribe(ctx context.Context, room string) error
	Unsubscribe(ctx context.Context, room string) error
	// Kick has every node close the connections of username in room (see
	// KickFunc). It is a control message, ordered with the room's frames on
	// each node; nothing is kept.
	Kick(ctx context.Context, room, username string) error
	// Ping reports whether the broker's backend is reachable (for /readyz).
	Ping(ctx context.Context) error
	// Close stops the broker and waits for what it started.
	Close() error
}

// errNoDirect is PublishDirect's error on a broker built without a DirectFunc.
var errNoDirect = errors.New("broker: no direct delivery configured")
