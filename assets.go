// Package chatserver holds the files the binary embeds: the default config and
// the templates, so that `chatserver serve` works from any directory.
package chatserver

import "embed"

// DefaultConfig is config/chatserver.yaml, the configuration used when no
// --config is given.
//
//go:embed config/chatserver.yaml
var DefaultConfig []byte

// Templates holds templates/*.html (index.html, message.html).
//
//go:embed templates/*.html
var Templates embed.FS

// Static holds static/ (the page's script and stylesheet), served at /static/.
//
//go:embed static
var Static embed.FS
