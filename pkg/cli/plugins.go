package cli

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func newPlugins() *cobra.Command {
	cmd := &cobra.Command{Use: "plugins", Short: "Inspect the plugins compiled into this binary", Args: argsNone}
	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List every plugin, built-in and custom, with its description and options (type = default)",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, _ := cmd.Flags().GetBool("json")
			if asJSON {
				return listPluginsJSON(cmd)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			for _, s := range pipeline.Plugins() {
				fmt.Fprintf(tw, "%s\t%s\n", s.Name, s.Description)
				for _, o := range s.OptionInfo() {
					fmt.Fprintf(tw, "    %s\t%s\n", o.Key, o.String()[len(o.Key)+1:])
				}
			}
			return tw.Flush()
		},
	}
	list.Flags().Bool("json", false, "print JSON: [{name, description, options: [{key, type, default}]}]")
	cmd.AddCommand(list)
	return cmd
}

// pluginJSON is one plugin in `plugins list --json`.
type pluginJSON struct {
	Name        string                `json:"name"`
	Description string                `json:"description"`
	Options     []pipeline.OptionInfo `json:"options"`
}

func listPluginsJSON(cmd *cobra.Command) error {
	out := []pluginJSON{}
	for _, s := range pipeline.Plugins() {
		opts := s.OptionInfo()
		if opts == nil {
			opts = []pipeline.OptionInfo{}
		}
		out = append(out, pluginJSON{Name: s.Name, Description: s.Description, Options: opts})
	}
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
