// Command chatserver-emoji is chatserver with one more plugin: emoji. It is
// the whole of a custom binary — the CLI, the built-in plugins, and yours.
package main

import (
	"os"

	"github.com/google/uuid"

	_ "github.com/chatserver/chatserver/examples/emoji" // registers "emoji"
	"github.com/chatserver/chatserver/pkg/cli"
	_ "github.com/chatserver/chatserver/pkg/plugins" // the built-in plugins
)

func main() {
	uuid.EnableRandPool() // as chatserver's main: cheaper ids (see cmd/chatserver)
	os.Exit(cli.Main(os.Args[1:]))
}
