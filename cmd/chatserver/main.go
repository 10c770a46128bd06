// Command chatserver runs the chat server. A custom binary with extra plugins
// is this same main plus a blank import of the plugin package (see examples/).
package main

import (
	"os"

	"github.com/chatserver/chatserver/pkg/cli"
	_ "github.com/chatserver/chatserver/pkg/plugins" // the built-in plugins
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
