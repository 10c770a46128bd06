// Package cli is chatserver's command line (cobra). A custom binary imports it
// together with its plugin packages and calls Main:
//
//	func main() { os.Exit(cli.Main(os.Args[1:])) }
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/chatserver/chatserver/pkg/config"
)

// Exit codes, the same for every command.
const (
	ExitOK      = 0
	ExitFailure = 1 // failure at run time
	ExitUsage   = 2 // bad usage or bad config
)

// Version and Commit are set at build time with -ldflags "-X …".
var (
	Version = "dev"
	Commit  = ""
)

// usageError marks errors that exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Main runs the command line with args and returns the exit code. Errors are
// printed to stderr on one line, never as a stack trace.
func Main(args []string) int {
	return run(args, os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "chatserver:", err)
	var ue usageError
	var ce *config.Error
	switch {
	case errors.As(err, &ue), errors.As(err, &ce):
		return ExitUsage
	}
	return ExitFailure
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "chatserver",
		Short:         "A real-time chat server whose every event flows through a pipeline of plugins",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServe(), newPlugins(), newConfigCmd(), newVersion())
	for _, c := range extraCommands {
		root.AddCommand(c())
	}
	// Unknown subcommands and bad args are usage errors too.
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q (see chatserver --help)", args[0])}
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	return root
}

// extraCommands lets other files of this package (history, bench, pipeline)
// add commands without touching newRoot.
var extraCommands []func() *cobra.Command

// loadConfig loads --config (or the embedded default) with env and flags.
func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	return config.Load(path, cmd.Flags())
}

func addConfigFlag(cmd *cobra.Command) {
	cmd.Flags().StringP("config", "c", "", "config file (default: the embedded config/chatserver.yaml)")
}

// argsNone is cobra.NoArgs as a usage error.
func argsNone(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", args[0])}
	}
	return nil
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and Go version",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, _ []string) error {
			commit := Commit
			if commit == "" {
				if bi, ok := debug.ReadBuildInfo(); ok {
					for _, s := range bi.Settings {
						if s.Key == "vcs.revision" {
							commit = s.Value
						}
					}
				}
			}
			if commit == "" {
				commit = "unknown"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "chatserver %s (commit %s, %s %s/%s)\n", Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

// signalContext is cancelled on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
