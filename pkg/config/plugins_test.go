package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPluginsTimeout(t *testing.T) {
	tests := []struct {
		name, yaml string
		env        string
		want       time.Duration
		wantErr    string
	}{
		{"default", "", "", 5 * time.Second, ""},
		{"set", "plugins: { timeout: 250ms }\n", "", 250 * time.Millisecond, ""},
		{"from the environment", "", "2s", 2 * time.Second, ""},
		{"negative", "plugins: { timeout: -1s }\n", "", 0, "plugins.timeout: must not be negative"},
		{"unknown key", "plugins: { timout: 1s }\n", "", 0, "timout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.env != "" {
				t.Setenv("CHATSERVER_PLUGINS_TIMEOUT", tt.env)
			}
			cfg, err := Load(path, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Plugins.StepTimeout(); got != tt.want {
				t.Errorf("StepTimeout() = %v, want %v", got, tt.want)
			}
		})
	}
}
