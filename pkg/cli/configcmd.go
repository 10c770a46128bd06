package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/chatserver/chatserver/pkg/server"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with config files", Args: argsNone}
	check := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate a config and print the resolved pipelines",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _ := cmd.Flags().GetString("config")
			if path == "" {
				return usageError{fmt.Errorf("config check needs --config FILE")}
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			// Build a server without listening: that builds every pipeline
			// step with its options, as serve would. Nothing waits for
			// Redis: a redis store connects in the background and is
			// closed again right away.
			srv, err := server.New(cfg, server.Options{Logger: newLogger(cmd.ErrOrStderr())})
			if err != nil {
				return err
			}
			defer func() { _ = srv.Close() }()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s: ok\n", cfg.Source)
			fmt.Fprintf(out, "history: %s (size %d), broker: %s\n", cfg.History.Store, cfg.History.Size, cfg.Broker.Type)
			fmt.Fprintf(out, "api: %s\n", cfg.API) // keys print as <redacted>
			return printPipelines(out, srv.Pipelines().Steps())
		},
	}
	addConfigFlag(check)
	cmd.AddCommand(check)
	return cmd
}
