// Package pipeline is chatserver's event engine and its public plugin API.
//
// Every event — a member joins, sends a message, leaves — is an *Event run
// through the pipeline of its Kind. A pipeline is a list of steps declared in
// YAML (`use: NAME`, optional `with:` and `name:`); each step is a Plugin, a
// middleware over the event:
//
//	type Plugin interface{ Wrap(next Handler) Handler }
//
// The handler a plugin returns may change ev.Envelope and call next, return an
// *Error (see Reject) to refuse the event with a code the sender is told,
// reply to the sender alone (ev.Reply), skip next to drop the event quietly,
// or act after next returned (ev.Completed tells whether the rest accepted it).
//
// A plugin package registers its plugins by name in init, like a database/sql
// driver; NewSpec types the options end to end:
//
//	func init() {
//		pipeline.Register(pipeline.NewSpec("emoji", "turns :smile: codes into emoji",
//			func() *Options { return &Options{} }, // defaults; `with:` is decoded onto them
//			func(o *Options, deps pipeline.Deps) (pipeline.Plugin, error) { … }))
//	}
//
// A handler changes a message's body with ev.SetBody (which also drops html
// rendered from the old body) and reads and replaces a frame's data with
// ev.Envelope.Data / ev.SetData. Package pipelinetest runs pipelines in a
// test as the server does.
//
// and a custom binary is chatserver's command line plus a blank import of the
// plugin package (see examples/emoji in the repository).
//
// # Obligations of a plugin
//
//   - The handler is called concurrently for events of different
//     connections; per-connection state goes in Sender.SetValue.
//   - It must honour ctx: the server cancels it after plugins.timeout (5s by
//     default), and the event then fails with `error internal`. Go cannot stop
//     a goroutine that ignores ctx, so a plugin that blocks without watching
//     ctx holds that connection's events until it returns.
//   - A panic costs the one event (`error internal`), never the server.
//   - A plugin that holds resources implements io.Closer; Close is called when
//     its pipelines are replaced (hot reload) or the server stops. Events that
//     are still running in the old pipelines may finish after Close.
//
// Deps gives plugins the server's services (publisher, history, members,
// templates, logger) through small interfaces, so plugins never see transport
// or storage types.
package pipeline
