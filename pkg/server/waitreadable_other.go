//go:build !(linux && (amd64 || arm64))

package server

// peekBuilt says whether readable peeks at the socket on this platform.
const peekBuilt = false

// readable returns at once where the pong-taking wait is not built (it
// calls recvfrom directly; see waitreadable_linux.go): the reader then parks
// in gorilla's ReadMessage, as it does over TLS, on a 4 KB stack.
func (b *batchConn) readable(func(), func([]byte) error, bool) error { return nil }
