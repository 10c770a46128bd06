// Command chatserver-emoji is chatserver with one more plugin: emoji. It is
// the whole of a custom binary — the CLI, the built-in plugins, and yours.
package main

import (
	"os"

	_ "github.com/chatserver/chatserver/examples/emoji" // registers "emoji"
	"github.com/chatserver/chatserver/pkg/cli"
	_ "github.com/chatserver/chatserver/pkg/plugins" // the built-in plugins
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
