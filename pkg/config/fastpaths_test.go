package config

import (
	"strings"
	"testing"
)

// Every fast path is on by default; each can be turned off alone, from the
// file or the environment; a misspelt switch or a value that is not a
// boolean is an error naming it.
func TestFastPaths(t *testing.T) {
	for _, k := range []string{"IDLE_READER", "IDLE_POLLER", "FRAME_WRITER", "ENVELOPE_JSON"} {
		t.Setenv("CHATSERVER_FAST_PATHS_"+k, "") // make test's second run sets them
	}
	all := FastPaths{IdleReader: true, IdlePoller: true, FrameWriter: true, EnvelopeJSON: true}
	tests := []struct {
		name, body, env string
		want            FastPaths
	}{
		{"default", "", "", all},
		{"one off in the file", "fast_paths: {idle_reader: false}\n", "", FastPaths{IdlePoller: true, FrameWriter: true, EnvelopeJSON: true}},
		{"one off in the environment", "", "CHATSERVER_FAST_PATHS_FRAME_WRITER", FastPaths{IdleReader: true, IdlePoller: true, EnvelopeJSON: true}},
		{"the poller off in the environment", "", "CHATSERVER_FAST_PATHS_IDLE_POLLER", FastPaths{IdleReader: true, FrameWriter: true, EnvelopeJSON: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv(tt.env, "false")
			}
			path := ""
			if tt.body != "" {
				path = writeFile(t, tt.body)
			}
			cfg, err := Load(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.FastPaths != tt.want {
				t.Fatalf("fast_paths = %+v, want %+v", cfg.FastPaths, tt.want)
			}
		})
	}
	for body, key := range map[string]string{
		"fast_paths: {idle_readers: false}\n":    "idle_readers",
		"fast_paths: {envelope_json: maybe}\n":   "envelope_json",
		"fast_paths: {idle_poller: sometimes}\n": "idle_poller",
	} {
		if _, err := Load(writeFile(t, body), nil); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: got %v, want an error naming %s", body, err, key)
		}
	}
}
