package cli

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/server"
)

// watchConfig hot-reloads srv's pipelines from --config (when one was given)
// until the returned stop is called; stop waits for the watcher to end.
func watchConfig(ctx context.Context, cmd *cobra.Command, srv *server.Server, log *slog.Logger) (stop func()) {
	path, _ := cmd.Flags().GetString("config")
	if path == "" {
		return func() {} // the embedded config never changes
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		load := func() (*config.Config, error) { return config.Load(path, cmd.Flags()) }
		if err := srv.WatchConfig(ctx, path, load); err != nil {
			log.Warn("hot reload is off", "err", err)
		}
	}()
	return func() { cancel(); <-done }
}
