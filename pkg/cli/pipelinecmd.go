package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatserver/chatserver/pkg/pipeline"
	"github.com/chatserver/chatserver/pkg/server"
)

func init() { extraCommands = append(extraCommands, newPipelineCmd) }

func newPipelineCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "pipeline", Short: "Work with the configured pipelines", Args: argsNone}
	run := &cobra.Command{
		Use:   "run [--config FILE] [--event message] --body TEXT [--username NAME] [--room ROOM]",
		Short: "Run one event through the configured pipeline, offline, and show what each step did",
		Long: `Runs one event through the pipeline of its kind without clients: nothing is
broadcast and no history is written; what would be is printed instead, with
each step's own time and error, the resulting envelope and the replies the
sender alone would get. Steps that call out (webhook) do make their calls.`,
		Args: argsNone,
		RunE: runPipeline,
	}
	addConfigFlag(run)
	run.Flags().String("event", "message", "event kind: join, message, leave or a custom kind of the config")
	run.Flags().String("body", "", "the message body (message and custom-kind events)")
	run.Flags().String("data", "", "the frame's data, a JSON object (message and custom-kind events)")
	run.Flags().String("to", "", "make it a direct message to this name (message and custom-kind events)")
	run.Flags().String("username", "", "the name the sender goes by (default: none yet, as a new connection)")
	run.Flags().String("rename", "", "the message's username field (a rename request, honoured when allow_rename is on)")
	run.Flags().String("room", server.DefaultRoom, "the sender's room")
	cmd.AddCommand(run, newPipelineTestCmd())
	return cmd
}

func runPipeline(cmd *cobra.Command, _ []string) error {
	flags := cmd.Flags()
	kindFlag, _ := flags.GetString("event")
	kind := pipeline.Kind(kindFlag)
	room, _ := flags.GetString("room")
	if err := checkRoom(room); err != nil {
		return err
	}
	cfg, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	if _, ok := cfg.Pipelines[kind]; !ok && kind.Custom() {
		return usageError{fmt.Errorf("--event %q: want join, message, leave or a kind of the config (%s)", kindFlag, kindList(cfg.Pipelines))}
	}
	var in pipeline.Inbound
	if kind != pipeline.Join && kind != pipeline.Leave {
		in.Body, _ = flags.GetString("body")
		in.To, _ = flags.GetString("to")
		if flags.Changed("rename") {
			r, _ := flags.GetString("rename")
			in.Username = &r
		}
		if d, _ := flags.GetString("data"); d != "" {
			if err := pipeline.CheckData([]byte(d)); err != nil {
				return usageError{fmt.Errorf("--data: %w", err)}
			}
			in.Data = []byte(d)
		}
	}
	// The server supplies templates and the logger; publishing, history and
	// members are replaced by recorders, so nothing is broadcast or kept
	// (a webhook step still makes its call).
	srv, err := server.New(cfg, server.Options{Logger: newLogger(cmd.ErrOrStderr())})
	if err != nil {
		return err
	}
	defer srv.Close()
	rec := &recording{}
	deps := srv.Deps()
	deps.Publisher, deps.History, deps.Members = rec, rec, rec
	p, err := pipeline.Build(cfg.Pipelines, deps, pipeline.BuildOptions{Observer: rec, EventTimeout: cfg.Plugins.StepTimeout()})
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Source, err)
	}
	defer p.Close()

	name, _ := flags.GetString("username")
	sender := &offlineSender{room: room, rec: rec}
	sender.SetUsername(name)
	ev := pipeline.NewEvent(kind, sender, in) // as the server starts every event

	runErr := p.Run(context.Background(), ev)
	return printRun(cmd.OutOrStdout(), kind, ev, runErr, rec)
}

func printRun(w io.Writer, kind pipeline.Kind, ev *pipeline.Event, runErr error, rec *recording) error {
	fmt.Fprintf(w, "pipeline %s:\n", kind)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// The observer hears from the innermost step first.
	for i := len(rec.steps) - 1; i >= 0; i-- {
		st := rec.steps[i]
		res := "ok"
		if st.err != nil {
			res = "error: " + st.err.Error()
		}
		fmt.Fprintf(tw, "  %d. %s\t%v\t%s\n", len(rec.steps)-i, st.name, st.d.Round(time.Microsecond), res)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case runErr != nil:
		e := pipeline.AsError(runErr)
		fmt.Fprintf(w, "result: rejected, the sender gets error %s: %s\n", e.Code, e.Reason)
		if e.Code == pipeline.CodeInternal {
			fmt.Fprintf(w, "  cause: %v\n", runErr)
		}
	case ev.Completed():
		fmt.Fprintln(w, "result: went through every step")
	default:
		fmt.Fprintln(w, "result: dropped by a step (no error to the sender)")
	}
	env, err := json.Marshal(&ev.Envelope)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "envelope: %s\n", env)
	for _, f := range rec.published {
		if f.to != "" {
			fmt.Fprintf(w, "would send to %s in %s and to the sender (a direct message): %s\n", f.to, f.room, f.frame)
			continue
		}
		fmt.Fprintf(w, "would broadcast to %s (keep in history: %v): %s\n", f.room, f.keep, f.frame)
	}
	for _, f := range rec.appended {
		fmt.Fprintf(w, "would append to the history of %s: %s\n", f.room, f.frame)
	}
	for _, f := range rec.replies {
		fmt.Fprintf(w, "would reply to the sender: %s\n", f)
	}
	return nil
}

type recordedFrame struct {
	room  string
	frame []byte
	keep  bool
	to    string // a direct message's recipient
}

type observedStep struct {
	name string
	d    time.Duration
	err  error
}

// recording stands in for the server's publisher, history and members, and
// observes the steps.
type recording struct {
	mu        sync.Mutex
	published []recordedFrame
	appended  []recordedFrame
	replies   [][]byte
	steps     []observedStep
}

func (r *recording) Publish(_ context.Context, p pipeline.Publication) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.published = append(r.published, recordedFrame{p.Room, append([]byte(nil), p.Frame...), p.Keep, p.To})
	return nil
}

func (r *recording) Append(_ context.Context, room, _ string, frame []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.appended = append(r.appended, recordedFrame{room: room, frame: append([]byte(nil), frame...)})
	return nil
}

// Members is empty: offline, nobody is in the room.
func (r *recording) Members(context.Context, string) ([]pipeline.Member, error) {
	return []pipeline.Member{}, nil
}

// kindList names the kinds of pc, for messages.
func kindList(pc pipeline.Config) string {
	kinds := pc.Kinds()
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

func (r *recording) ObserveStep(_ pipeline.Kind, step string, d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, observedStep{step, d, err})
}

// offlineSender is the connection of `pipeline run`: client 1, no cookies.
type offlineSender struct {
	room string
	rec  *recording
	pipeline.SenderState
}

func (s *offlineSender) ID() int64                    { return 1 }
func (s *offlineSender) Room() string                 { return s.room }
func (s *offlineSender) Cookie(string) (string, bool) { return "", false }
func (s *offlineSender) Query(string) string          { return "" }
func (s *offlineSender) RemoteAddr() string           { return "127.0.0.1:0" }

func (s *offlineSender) Send(frame []byte) error {
	s.rec.mu.Lock()
	defer s.rec.mu.Unlock()
	s.rec.replies = append(s.rec.replies, append([]byte(nil), frame...))
	return nil
}

var (
	_ pipeline.Sender        = (*offlineSender)(nil)
	_ pipeline.Publisher     = (*recording)(nil)
	_ pipeline.HistoryWriter = (*recording)(nil)
	_ pipeline.Members       = (*recording)(nil)
	_ pipeline.Observer      = (*recording)(nil)
)
