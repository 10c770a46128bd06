// Package chatserver holds the files the binary embeds: the default config and
// the templates, so that `chatserver serve` works from any directory.
package chatserver

import (
	"embed"
	"io/fs"
)

// DefaultConfig is config/chatserver.yaml, the configuration used when no
// --config is given.
//
//go:embed config/chatserver.yaml
var DefaultConfig []byte

// Templates holds templates/*.html (index.html, message.html).
//
//go:embed templates/*.html
var Templates embed.FS

//go:embed static
var staticDir embed.FS

//go:embed clients/js/chatserver.js
var clientJS embed.FS

// ClientJSPath is where the JavaScript client lives in the repository; Static
// serves that very file as static/chatserver.js (there is no copy to drift).
const ClientJSPath = "clients/js/chatserver.js"

// Static holds static/ (the page's script and stylesheet), served at /static/,
// with the JavaScript client (ClientJSPath) as static/chatserver.js: the page
// imports it, and so can any other page.
var Static fs.FS = staticFS{}

type staticFS struct{}

func (staticFS) Open(name string) (fs.File, error) {
	if name == "static/chatserver.js" {
		return clientJS.Open(ClientJSPath)
	}
	return staticDir.Open(name)
}

// interface guard
var _ fs.FS = staticFS{}
