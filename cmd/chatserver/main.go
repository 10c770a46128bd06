// Command chatserver runs the chat server. A custom binary with extra plugins
// is this same main plus a blank import of the plugin package (see examples/).
package main

import (
	"os"

	"github.com/google/uuid"

	"github.com/chatserver/chatserver/pkg/cli"
	_ "github.com/chatserver/chatserver/pkg/plugins" // the built-in plugins
)

func main() {
	// Every envelope gets a UUID. Drawing them from a pool of random bytes
	// instead of a getrandom call each is several times cheaper; the ids are
	// public (every member sees them), so a heap-held pool costs no
	// secrecy. It is process-wide and must come before any id is made.
	uuid.EnableRandPool()
	os.Exit(cli.Main(os.Args[1:]))
}
