package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatserver/chatserver/pkg/bench"
)

func init() { extraCommands = append(extraCommands, newBench) }

// newBench is `chatserver bench fanout|rooms|conns`: the load generator (loopback
// targets only; every run is bounded and stops by itself).
func newBench() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load a local server: fan-out latency and throughput, many small rooms, memory per connection (loopback only)",
		Args:  argsNone,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newBenchFanout(), newBenchRooms(), newBenchConns())
	return cmd
}

func newBenchFanout() *cobra.Command {
	var cfg bench.FanoutConfig
	var jsonOnly bool
	var startedFile string
	var addrs []string
	var pids []int
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "N subscribers in one room, P publishers at a fixed total rate; loss, latency, server CPU per delivery",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := runContext(cfg.Duration + cfg.Settle + cfg.Drain + 5*time.Minute)
			defer stop()
			if path := os.Getenv("CHATSERVER_BENCH_CPUPROFILE"); path != "" {
				f, err := os.Create(path) //nolint:gosec // the profile path is the operator's own choice
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			cfg.Addr, cfg.Addrs = splitAddrs(addrs)
			cfg.PIDs = pids
			if startedFile != "" {
				cfg.Started = func() {
					if err := os.WriteFile(startedFile, nil, 0o600); err != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "bench: --started-file: %v\n", err)
					}
				}
			}
			res, err := bench.Fanout(ctx, cfg)
			if err != nil {
				return benchError(err)
			}
			return writeResult(cmd.OutOrStdout(), res, jsonOnly)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&addrs, "addr", []string{"127.0.0.1:8000"}, "server HOST:PORT (loopback only); several (repeated or comma-separated: the nodes of a cluster) spread subscribers and publishers round-robin over them")
	f.StringVar(&cfg.Room, "room", "bench", "room")
	f.IntVarP(&cfg.Subscribers, "subscribers", "n", 1000, "subscribers")
	f.IntVarP(&cfg.Publishers, "publishers", "p", 2, "publishers")
	f.Float64VarP(&cfg.Rate, "rate", "r", 100, "messages per second, all publishers together")
	addLoadFlags(cmd, &cfg.Duration, &cfg.BodyBytes, &cfg.Settle, &cfg.Drain, &pids)
	f.BoolVar(&cfg.Compress, "compress", false, "offer permessage-deflate")
	f.BoolVar(&jsonOnly, "json", false, "print only the JSON line")
	f.StringVar(&startedFile, "started-file", "", "create this file when the first message is sent (a fault schedule times its faults from it: scripts/loadtest.sh chaos)")
	return cmd
}

func newBenchRooms() *cobra.Command {
	var cfg bench.RoomsConfig
	var jsonOnly bool
	var addrs []string
	var pids []int
	cmd := &cobra.Command{
		Use:   "rooms",
		Short: "many small rooms (every member in one, each room publishing on its own schedule); ingress, deliveries, loss, latency",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := runContext(cfg.Duration + cfg.Settle + cfg.Drain + 5*time.Minute)
			defer stop()
			cfg.Addr, cfg.Addrs = splitAddrs(addrs)
			cfg.PIDs = pids
			res, err := bench.Rooms(ctx, cfg)
			if err != nil {
				return benchError(err)
			}
			return writeResult(cmd.OutOrStdout(), res, jsonOnly)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&addrs, "addr", []string{"127.0.0.1:8000"}, "server HOST:PORT (loopback only); several (repeated or comma-separated: the nodes of a cluster) spread the members round-robin over them")
	f.StringVar(&cfg.Room, "room", "rooms", "room name prefix: rooms are PREFIX-0, PREFIX-1, …")
	f.IntVar(&cfg.Rooms, "rooms", 2000, "rooms")
	f.IntVar(&cfg.Members, "members", 5, "members per room (one of them publishes; its own messages count)")
	f.Float64VarP(&cfg.Rate, "rate", "r", 1000, "messages per second over all rooms (each room sends rate/rooms, from a random phase)")
	addLoadFlags(cmd, &cfg.Duration, &cfg.BodyBytes, &cfg.Settle, &cfg.Drain, &pids)
	f.BoolVar(&cfg.Compress, "compress", false, "offer permessage-deflate")
	f.IntVar(&cfg.DialConcurrency, "dial-concurrency", 200, "simultaneous handshakes")
	f.BoolVar(&jsonOnly, "json", false, "print only the JSON line")
	return cmd
}

func newBenchConns() *cobra.Command {
	var cfg bench.ConnsConfig
	var jsonOnly bool
	var addrs []string
	cmd := &cobra.Command{
		Use:   "conns",
		Short: "N idle connections (a join storm into one room by default); join time, server RSS per connection",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := runContext(cfg.Settle + cfg.Hold + cfg.CheckTimeout + 10*time.Minute)
			defer stop()
			cfg.Addrs = addrs
			cfg.APIKey = os.Getenv("CHATSERVER_BENCH_API_KEY")
			res, err := bench.Conns(ctx, cfg)
			if err != nil {
				return benchError(err)
			}
			if err := writeResult(cmd.OutOrStdout(), res, jsonOnly); err != nil {
				return err
			}
			if err := res.CheckError(); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&addrs, "addr", []string{"127.0.0.1:8000"}, "server HOST:PORT (loopback only); several (repeated or comma-separated: the nodes of a cluster) spread members round-robin over them")
	f.StringVar(&cfg.Room, "room", "idle", "room (the prefix of room-0, room-1, … with --rooms)")
	f.IntVarP(&cfg.Conns, "conns", "n", 1000, "connections")
	f.IntVar(&cfg.Rooms, "rooms", 1, "spread the connections over this many rooms")
	f.IntVar(&cfg.Offset, "offset", 0, "number of this generator's first member among several generators' (member j: node j % nodes, room (j / nodes) % rooms)")
	f.StringVar(&cfg.Sync, "sync", "", "folder where --generators processes of one run meet (before dialling, once joined, after the check)")
	f.IntVar(&cfg.Generators, "generators", 1, "generator processes meeting in --sync")
	f.StringVar(&cfg.Check, "check", "", "run tag: once every generator joined, check that each member gets its room's check message exactly once (exit 1 if not)")
	f.BoolVar(&cfg.Post, "post", false, "post the check messages, one per room, through the server API (key in $CHATSERVER_BENCH_API_KEY); one generator of a run")
	f.DurationVar(&cfg.CheckTimeout, "check-timeout", 30*time.Second, "longest wait for the check's deliveries")
	f.DurationVar(&cfg.Settle, "settle", 3*time.Second, "pause after the last join before reading the server's RSS")
	f.DurationVar(&cfg.Hold, "hold", 0, "keep the connections open this long after measuring")
	f.BoolVar(&cfg.Compress, "compress", false, "offer permessage-deflate")
	f.IntVar(&cfg.DialConcurrency, "dial-concurrency", 200, "simultaneous handshakes")
	f.IntSliceVar(&cfg.PIDs, "pid", nil, "server PID: report its RSS per connection from /proc; several: one per --addr, in order (each node's RSS over the members on it)")
	f.BoolVar(&jsonOnly, "json", false, "print only the JSON line")
	return cmd
}

// addLoadFlags registers the flags fanout and rooms share: how long they
// publish, the body size, the pauses around publishing and the server PIDs.
func addLoadFlags(cmd *cobra.Command, duration *time.Duration, body *int, settle, drain *time.Duration, pids *[]int) {
	f := cmd.Flags()
	f.DurationVarP(duration, "duration", "d", 10*time.Second, "how long to publish")
	f.IntVar(body, "body", 40, "message body size in bytes")
	f.DurationVar(settle, "settle", time.Second, "pause between the last join and the first message")
	f.DurationVar(drain, "drain", 5*time.Second, "longest wait for late deliveries")
	f.IntSliceVar(pids, "pid", nil, "server PID: report its CPU per delivery and RSS from /proc; several (repeated or comma-separated: a cluster's nodes) are summed")
}

// runContext is a run's context: cancelled on SIGINT or SIGTERM, and after
// bound (every scenario also stops by itself).
func runContext(bound time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signalContext()
	ctx, cancel := context.WithTimeout(ctx, bound)
	return ctx, func() { cancel(); stop() }
}

// splitAddrs is --addr as a scenario's Addr (one server) or Addrs (several).
func splitAddrs(addrs []string) (addr string, several []string) {
	if len(addrs) == 1 {
		return addrs[0], nil
	}
	return "", addrs
}

// writeResult prints a run's result: the text report unless jsonOnly, then
// the JSON line.
func writeResult(w io.Writer, res interface{ WriteText(io.Writer) }, jsonOnly bool) error {
	if !jsonOnly {
		res.WriteText(w)
	}
	return bench.WriteJSON(w, res)
}

// benchError makes a refused scenario a usage error (exit 2); anything else
// (the server is not there, a connection failed) is a run-time failure.
func benchError(err error) error {
	if errors.Is(err, bench.ErrBadConfig) {
		return usageError{fmt.Errorf("bench: %w", err)}
	}
	return fmt.Errorf("bench: %w", err)
}
