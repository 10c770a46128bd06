package broker

import (
	"context"
	"fmt"
)

// payloadKick is the first byte of a kick on a room's channel: the rest of
// the payload is the username. (Published frames start with 'k' when kept,
// 'n' when not, see publishScript; 'd' starts a direct message.)
const payloadKick = 'x'

// Kick implements Broker: the kick goes out on the room's channel, so every
// node with members in the room gets it, after the frames published before
// it. When Redis cannot be reached this node still kicks its own members,
// and the error says the others were not told.
func (b *Redis) Kick(ctx context.Context, room, username string) error {
	err := b.publishRaw(ctx, room, string(rune(payloadKick))+username)
	if err == nil {
		return nil
	}
	if b.opts.Kick != nil {
		b.opts.Kick(room, username)
	}
	return fmt.Errorf("broker: kick in room %s reached this node only: %w", room, err)
}
