package broker

// QueuedPublishes is the number of publishes waiting for the batcher (tests
// wait for it to know a batch is ready, instead of sleeping).
func (b *Redis) QueuedPublishes() int {
	if b.batcher == nil {
		return 0
	}
	return len(b.batcher.reqs)
}
