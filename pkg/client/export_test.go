package client

// SetJitter replaces the reconnect delay's random draw in [0, n) until the
// returned function restores it. Set it before Dial and restore it after
// Close: the client's goroutines read it.
func SetJitter(f func(n int64) int64) (restore func()) {
	old := jitter
	jitter = f
	return func() { jitter = old }
}
