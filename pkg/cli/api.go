package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatserver/chatserver/pkg/server"
)

func init() { extraCommands = append(extraCommands, newAPICmd) }

// APIKeyEnv is the environment variable `chatserver api` takes its key
// from: a key on the command line would be in the shell history and in ps.
const APIKeyEnv = "CHATSERVER_API_KEY" //nolint:gosec // G101: the name of a variable, not a credential

// apiTimeout bounds one request of `chatserver api`.
const apiTimeout = 15 * time.Second

func newAPICmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Call a running server's API: post, delete, kick, rooms (key from $" + APIKeyEnv + ")",
		Args:  argsNone, // an unknown subcommand is bad usage (exit 2)
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.PersistentFlags().String("server", "http://127.0.0.1:8000", "the server's base URL")

	post := &cobra.Command{
		Use:   "post ROOM BODY --username NAME [--type KIND] [--data JSON] [--to NAME] [--ref REF]",
		Short: "Post into a room as NAME; prints the envelope as broadcast",
		Args:  argsExactly(2, "ROOM BODY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			username, _ := f.GetString("username")
			if strings.TrimSpace(username) == "" {
				return usageError{errors.New("api post needs --username NAME")}
			}
			req := map[string]any{"username": username, "body": args[1]}
			for _, name := range []string{"type", "to", "ref"} {
				if v, _ := f.GetString(name); v != "" {
					req[name] = v
				}
			}
			if v, _ := f.GetString("data"); v != "" {
				var obj map[string]any
				if err := json.Unmarshal([]byte(v), &obj); err != nil {
					return usageError{fmt.Errorf("--data: want a JSON object: %v", err)}
				}
				req["data"] = json.RawMessage(v)
			}
			return callAPI(cmd, http.MethodPost, roomPath(args[0], "messages"), req, true)
		},
	}
	post.Flags().String("username", "", "the sender's name (required)")
	post.Flags().String("type", "", "message (default) or a custom kind")
	post.Flags().String("data", "", "a JSON object carried in the envelope's data")
	post.Flags().String("to", "", "a direct message to the members of that name")
	post.Flags().String("ref", "", "an idempotency reference (resending it does not post twice)")

	del := &cobra.Command{
		Use:   "delete ROOM ID",
		Short: "Delete a message from a room's history and from its members' screens",
		Args:  argsExactly(2, "ROOM ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return callAPI(cmd, http.MethodDelete, roomPath(args[0], "messages", args[1]), nil, true)
		},
	}

	kick := &cobra.Command{
		Use:   "kick ROOM NAME [--ban DURATION]",
		Short: "Close every connection of NAME in ROOM, on every node; --ban refuses its joins for that long",
		Args:  argsExactly(2, "ROOM NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := map[string]any{"username": args[1]}
			if ban, _ := cmd.Flags().GetString("ban"); ban != "" {
				if d, err := time.ParseDuration(ban); err != nil || d <= 0 {
					return usageError{fmt.Errorf("--ban %q: want a positive duration such as 10m or 24h", ban)}
				}
				req["ban"] = ban
			}
			return callAPI(cmd, http.MethodPost, roomPath(args[0], "kick"), req, true)
		},
	}
	kick.Flags().String("ban", "", "ban NAME from ROOM for this long (10m, 24h)")

	rooms := &cobra.Command{
		Use:   "rooms",
		Short: "List the rooms with members on any node, with their counts",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return callAPI(cmd, http.MethodGet, "/api/rooms", nil, false)
		},
	}
	cmd.AddCommand(post, del, kick, rooms)
	return cmd
}

// argsExactly wants n arguments, named in the usage error.
func argsExactly(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s wants %s, got %d arguments", cmd.CommandPath(), names, len(args))}
		}
		if !server.ValidRoom(args[0]) {
			return usageError{fmt.Errorf("room %q: want 1-64 characters of A-Z a-z 0-9 _ . -", args[0])}
		}
		return nil
	}
}

// roomPath is /api/rooms/ROOM/PARTS…, each part escaped.
func roomPath(room string, parts ...string) string {
	p := "/api/rooms/" + url.PathEscape(room)
	for _, part := range parts {
		p += "/" + url.PathEscape(part)
	}
	return p
}

// callAPI sends one request to --server and prints the answer's body. A
// write (needKey) without $CHATSERVER_API_KEY is a usage error; an answer of
// 400 or more is a run-time error naming the server's code and reason.
func callAPI(cmd *cobra.Command, method, path string, body any, needKey bool) error {
	base, _ := cmd.Flags().GetString("server")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Errorf("--server %q: want http://HOST:PORT or https://HOST:PORT", base)}
	}
	key := os.Getenv(APIKeyEnv)
	if needKey && key == "" {
		return usageError{fmt.Errorf("set %s to a key of the server's api.keys", APIKeyEnv)}
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encoding the request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), apiTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, rd)
	if err != nil {
		return usageError{fmt.Errorf("--server %q: %w", base, err)}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode >= 400 {
		var e struct{ Code, Reason string }
		if json.Unmarshal(out, &e) == nil && e.Code != "" {
			return fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, e.Code, e.Reason)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if len(bytes.TrimSpace(out)) > 0 {
		_, _ = fmt.Fprintln(cmd.OutOrStdout(), string(bytes.TrimSpace(out)))
	}
	return nil
}
