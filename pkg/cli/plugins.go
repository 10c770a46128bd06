package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func newPlugins() *cobra.Command {
	cmd := &cobra.Command{Use: "plugins", Short: "Inspect the plugins compiled into this binary", Args: argsNone}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List every plugin, built-in and custom, with a one-line description",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			for _, s := range pipeline.Plugins() {
				fmt.Fprintf(tw, "%s\t%s\n", s.Name, s.Description)
			}
			return tw.Flush()
		},
	})
	return cmd
}
