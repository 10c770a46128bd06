package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/server"
)

const reloadBase = `server: { addr: "127.0.0.1:0" }
pipelines:
  message:
    - use: username
    - use: validate
%s    - use: broadcast
`

// writeConfig replaces the file by rename, as editors do.
func writeConfig(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestWatchConfigHotReloadsPipelines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "chatserver.yaml")
	writeConfig(t, path, fmt.Sprintf(reloadBase, ""))
	load := func() (*config.Config, error) { return config.Load(path, nil) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	srv, err := server.New(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	s := &testServer{Server: srv, URL: ts.URL, ts: ts}

	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() { watchDone <- srv.WatchConfig(ctx, path, load) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-watchDone:
			if err != nil {
				t.Errorf("WatchConfig: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("WatchConfig did not return after its context was cancelled")
		}
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		ts.Close()
	})
	testutil.Eventually(t, 5*time.Second, "the watcher to start", func() bool { return strings.Contains(logs.String(), "watching config") })

	c := s.dial(t, "", nil)
	c.expect("history")
	c.expect("online")
	say := func(body string) string {
		t.Helper()
		c.send(map[string]string{"body": body})
		return c.next("message").Body
	}
	if got := say("darn it"); got != "darn it" {
		t.Fatalf("before reload: %q", got)
	}

	// Add a filter step: the same connection sees the next message filtered.
	old := srv.Pipelines()
	writeConfig(t, path, fmt.Sprintf(reloadBase, "    - use: filter\n      with: { words: [darn] }\n"))
	testutil.Eventually(t, 5*time.Second, "the new pipelines", func() bool { return srv.Pipelines() != old })
	if got := say("darn it"); got != "**** it" {
		t.Errorf("after reload: %q, want the filter applied", got)
	}

	// Bad configs are refused with a log line; the running pipelines stay.
	for _, bad := range []struct{ name, text, log string }{
		{"invalid YAML", "pipelines: [oops\n", "not valid YAML"},
		{"unknown plugin", fmt.Sprintf(reloadBase, "    - use: nosuch\n"), `unknown plugin \"nosuch\"`},
	} {
		running := srv.Pipelines()
		n := strings.Count(logs.String(), "config reload refused")
		writeConfig(t, path, bad.text)
		testutil.Eventually(t, 5*time.Second, bad.name+" to be refused", func() bool { return strings.Count(logs.String(), "config reload refused") > n })
		if !strings.Contains(logs.String(), bad.log) {
			t.Errorf("%s: log lacks %q:\n%s", bad.name, bad.log, logs)
		}
		if srv.Pipelines() != running {
			t.Errorf("%s: pipelines were swapped", bad.name)
		}
		if got := say("darn " + bad.name); !strings.HasPrefix(got, "**** ") {
			t.Errorf("%s: old pipeline not running: %q", bad.name, got)
		}
	}

	// A change outside pipelines: is not applied, and the log says so.
	writeConfig(t, path, strings.Replace(fmt.Sprintf(reloadBase, ""), "server: {", "history: { size: 5 }\nserver: {", 1))
	testutil.Eventually(t, 5*time.Second, "the restart warning", func() bool { return strings.Contains(logs.String(), "need a restart") })
}
