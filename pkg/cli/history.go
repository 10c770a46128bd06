package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/history"
	"github.com/chatserver/chatserver/pkg/server"
)

func init() {
	extraCommands = append(extraCommands, newHistoryCmd)
	// The Redis store logs connection trouble itself, through slog; go-redis's
	// own unstructured lines would repeat it (and break the CLI's promise of
	// one error line).
	redis.SetLogger(quietRedis{})
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func newHistoryCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "history", Short: "Read or clear a room's history in the configured store", Args: argsNone}

	dump := &cobra.Command{
		Use:   "dump [--config FILE] [--room ROOM] [--format jsonl|json|text] [--limit N]",
		Short: "Print a room's history, oldest first, exactly as it was broadcast",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, _ []string) error {
			room, _ := cmd.Flags().GetString("room")
			format, _ := cmd.Flags().GetString("format")
			limit, _ := cmd.Flags().GetInt("limit")
			if err := checkRoom(room); err != nil {
				return err
			}
			switch format {
			case "jsonl", "json", "text":
			default:
				return usageError{fmt.Errorf("--format %q: want jsonl, json or text", format)}
			}
			if limit < 0 {
				return usageError{fmt.Errorf("--limit %d: want 0 (everything kept) or more", limit)}
			}
			st, err := openStore(cmd, "dump", "dumped")
			if err != nil {
				return err
			}
			defer st.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			entries, err := st.Recent(ctx, room, limit)
			if err != nil {
				return fmt.Errorf("history dump: %w", err)
			}
			return writeEntries(cmd.OutOrStdout(), format, entries)
		},
	}
	addConfigFlag(dump)
	dump.Flags().String("room", server.DefaultRoom, "room to dump")
	dump.Flags().String("format", "jsonl", "jsonl (one envelope per line, as broadcast), json (an array) or text (datetime username: body)")
	dump.Flags().Int("limit", 0, "only the newest N messages (0: all that are kept)")

	clearCmd := &cobra.Command{
		Use:   "clear [--config FILE] --room ROOM",
		Short: "Empty one room's history",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, _ []string) error {
			room, _ := cmd.Flags().GetString("room")
			if room == "" {
				return usageError{errors.New("history clear needs --room ROOM")}
			}
			if err := checkRoom(room); err != nil {
				return err
			}
			st, err := openStore(cmd, "clear", "cleared")
			if err != nil {
				return err
			}
			defer st.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if err := st.Clear(ctx, room); err != nil {
				return fmt.Errorf("history clear: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cleared the history of room %s\n", room)
			return nil
		},
	}
	addConfigFlag(clearCmd)
	clearCmd.Flags().String("room", "", "room to empty (required)")

	cmd.AddCommand(dump, clearCmd)
	return cmd
}

func checkRoom(room string) error {
	if !server.ValidRoom(room) {
		return usageError{fmt.Errorf("--room %q: want 1-64 characters of A-Z a-z 0-9 _ . -", room)}
	}
	return nil
}

// openStore opens the configured store for a one-shot read or clear. Only a
// store outside this process can be reached: the memory store lives inside
// the running server. (config.Load has refused any other store name.)
func openStore(cmd *cobra.Command, verb, done string) (history.Store, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	if cfg.History.Store == "memory" {
		return nil, usageError{fmt.Errorf("history %s: %s uses history.store: memory, which lives inside the running server's process and cannot be %s from another one; use history.store: redis",
			verb, cfg.Source, done)}
	}
	opts := history.RedisOptions{
		URL: cfg.Redis.URL, KeyPrefix: cfg.Redis.KeyPrefix, Size: cfg.History.Size,
		Logger: slog.New(slog.DiscardHandler), // errors reach the user as the command's error
	}
	if !cfg.Redis.Cluster() {
		st, err := history.NewRedis(opts)
		if err != nil {
			return nil, &config.Error{Source: cfg.Source, Key: "redis.url", Err: err}
		}
		return st, nil
	}
	// A cluster: the server's client (its timeouts, credentials and TLS)
	// and the cluster's key names; a room is one key, on its slot's master.
	rdb, err := server.NewRedisClient(cfg)
	if err != nil {
		return nil, err
	}
	opts.Client, opts.Partitions = rdb, cfg.Redis.ClusterPartitions
	st, err := history.NewRedis(opts)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return closeBoth{st, rdb}, nil
}

// closeBoth is a store whose Close closes the client it was given too.
type closeBoth struct {
	history.Store
	client io.Closer
}

func (c closeBoth) Close() error { return errors.Join(c.Store.Close(), c.client.Close()) }

// writeEntries prints entries in format: jsonl and json keep each envelope's
// bytes exactly as stored (as broadcast).
func writeEntries(w io.Writer, format string, entries []history.Entry) error {
	var buf bytes.Buffer
	switch format {
	case "jsonl":
		for _, e := range entries {
			buf.Write(e.Frame)
			buf.WriteByte('\n')
		}
	case "json":
		if len(entries) == 0 {
			buf.WriteString("[]\n")
			break
		}
		buf.WriteString("[\n")
		for i, e := range entries {
			buf.Write(e.Frame)
			if i < len(entries)-1 {
				buf.WriteByte(',')
			}
			buf.WriteByte('\n')
		}
		buf.WriteString("]\n")
	case "text":
		for _, e := range entries {
			var env struct {
				Type     string `json:"type"`
				Datetime string `json:"datetime"`
				Username string `json:"username"`
				Body     string `json:"body"`
			}
			if err := json.Unmarshal(e.Frame, &env); err != nil {
				return fmt.Errorf("history dump: entry %s is not an envelope: %w", e.ID, err)
			}
			switch env.Type {
			case "online":
				fmt.Fprintf(&buf, "%s %s joined\n", env.Datetime, env.Username)
			case "offline":
				fmt.Fprintf(&buf, "%s %s left\n", env.Datetime, env.Username)
			default:
				fmt.Fprintf(&buf, "%s %s: %s\n", env.Datetime, env.Username, env.Body)
			}
		}
	}
	_, err := w.Write(buf.Bytes())
	return err
}
