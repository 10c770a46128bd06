// Package plugins holds the built-in pipeline plugins of chatserver: username,
// validate, ratelimit, render_html, history, broadcast, filter, commands and
// webhook.
//
// Each plugin registers itself by name in init, so importing this package
// (usually for its side effects) makes them usable as `use: NAME` in YAML:
//
//	import _ "github.com/chatserver/chatserver/pkg/plugins"
//
// The plugins never assume that the server stamped the envelope (id, type,
// room, client_id, datetime, ts) before the pipeline ran: a step that needs a
// field fills it in from the sender, so pipelines behave the same under
// `chatserver pipeline run` and in tests.
package plugins
