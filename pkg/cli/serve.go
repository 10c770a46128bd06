package cli

import (
	"github.com/spf13/cobra"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
	"github.com/chatserver/chatserver/pkg/server"
)

func newServe() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the chat server (no --config: in-memory history, one node, no Redis needed)",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			pipeline.SetFastJSON(cfg.FastPaths.EnvelopeJSON) // process-wide: here, not in server.New
			log := newLogger(cmd.ErrOrStderr())
			srv, err := server.New(cfg, server.Options{Logger: log})
			if err != nil {
				return err // before any log line: a bad config is one line on stderr
			}
			ctx, stop := signalContext()
			defer stop()
			defer watchConfig(ctx, cmd, srv, log)()
			if err := srv.ListenAndServe(ctx); err != nil {
				return err
			}
			log.Info("stopped")
			return nil
		},
	}
	addConfigFlag(cmd)
	cmd.Flags().String("addr", "", "listen address HOST:PORT (overrides server.addr)")
	config.BindFlag(cmd.Flags(), "addr", "server.addr")
	return cmd
}
