//go:build !(linux && (amd64 || arm64))

package server

import "errors"

// pollerBuilt says whether the idle poller is built on this platform: it
// needs epoll and the pong-taking wait (waitreadable_linux.go). Elsewhere an
// idle connection's reader waits in its goroutine.
const pollerBuilt = false

type idlePoller struct{}

func newIdlePoller(func(error)) (*idlePoller, error) {
	return nil, errors.New("idle poller: not built on this platform")
}

func (p *idlePoller) register(*batchConn) {}
func (p *idlePoller) arm(*batchConn) error {
	return errors.New("idle poller: not built on this platform")
}
func (p *idlePoller) forget(*batchConn) {}
func (p *idlePoller) close() error      { return nil }
