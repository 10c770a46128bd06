package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "chatserver.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadDefault(t *testing.T) {
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Addr != "0.0.0.0:8000" || cfg.History.Size != 100 || cfg.History.Store != "memory" ||
		cfg.WebSocket.SendQueue != 256 || cfg.WebSocket.PingInterval != 25*time.Second || !cfg.WebSocket.Compression ||
		cfg.Broker.PublishBatch != 256 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	if len(cfg.Pipelines[pipeline.Message]) != 6 || cfg.Pipelines[pipeline.Message][2].Use != "ratelimit" {
		t.Fatalf("default message pipeline: %+v", cfg.Pipelines[pipeline.Message])
	}
	if got := cfg.Pipelines[pipeline.Join][0].With["guest_format"]; got != "游客%d" {
		t.Fatalf("join username guest_format = %v", got)
	}
}

func TestLoadFileEnvFlags(t *testing.T) {
	p := writeFile(t, "server:\n  addr: 127.0.0.1:1\nhistory:\n  size: 7\npipelines:\n  message:\n    - use: broadcast\n")
	t.Setenv("CHATSERVER_SERVER_ADDR", "127.0.0.1:2")
	t.Setenv("CHATSERVER_WEBSOCKET_SEND_QUEUE", "9")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("addr", "", "")
	BindFlag(fs, "addr", "server.addr")

	cfg, err := Load(p, fs)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Addr != "127.0.0.1:2" {
		t.Errorf("env should beat file: addr = %q", cfg.Server.Addr)
	}
	if cfg.WebSocket.SendQueue != 9 || cfg.History.Size != 7 {
		t.Errorf("send_queue=%d size=%d", cfg.WebSocket.SendQueue, cfg.History.Size)
	}
	if len(cfg.Pipelines[pipeline.Message]) != 1 || len(cfg.Pipelines[pipeline.Join]) != 2 {
		t.Errorf("a listed pipeline replaces the default of its kind, others stay: %+v", cfg.Pipelines)
	}

	if err := fs.Parse([]string{"--addr", "127.0.0.1:3"}); err != nil {
		t.Fatal(err)
	}
	cfg, err = Load(p, fs)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Addr != "127.0.0.1:3" {
		t.Errorf("flag should beat env: addr = %q", cfg.Server.Addr)
	}
}

func TestLoadErrorsNameFileAndKey(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"unknown key", "server:\n  adr: x\n", []string{"adr"}},
		{"not yaml", "server: [\n", []string{"not valid YAML"}},
		{"bad duration", "server:\n  shutdown_timeout: soon\n", []string{"shutdown_timeout"}},
		{"bad store", "history:\n  store: disk\n", []string{"history.store", "disk", "memory, redis"}},
		{"bad size", "history:\n  size: 0\n", []string{"history.size"}},
		{"bad broker", "broker:\n  type: kafka\n", []string{"broker.type"}},
		{"redis broker, memory history", "broker:\n  type: redis\n", []string{"broker.type", "history.store: redis"}},
		{"node ttl too short", "broker:\n  node_ttl: 10ms\n", []string{"broker.node_ttl"}},
		{"negative publish batch", "broker:\n  publish_batch: -1\n", []string{"broker.publish_batch"}},
		{"zero outbox", "broker:\n  outbox_size: 0\n", []string{"broker.outbox_size", "at least 1", "got 0"}},
		{"zero replay rate", "broker:\n  replay_rate: 0\n", []string{"broker.replay_rate", "at least 1", "got 0"}},
		{"too many cluster partitions", "redis:\n  cluster_partitions: 16385\n", []string{"redis.cluster_partitions", "between 1 and 16384", "got 16385"}},
		{"bad redis url", "history:\n  store: redis\nredis:\n  url: \"http://x\"\n", []string{"redis.url"}},
		{"step without use", "pipelines:\n  message:\n    - with: {a: 1}\n", []string{"pipelines.message[0]", "use"}},
		{"half tls", "server:\n  tls: {cert_file: a.pem}\n", []string{"server.tls"}},
		{"negative conn cap", "limits:\n  max_conns_per_ip: -1\n", []string{"limits.max_conns_per_ip"}},
		{"negative rooms cap", "limits:\n  max_rooms: -5\n", []string{"limits.max_rooms"}},
		{"negative members cap", "limits:\n  max_members_per_room: -1\n", []string{"limits.max_members_per_room"}},
		{"negative handshake rate", "limits:\n  handshakes_per_ip: {rate: -1}\n", []string{"limits.handshakes_per_ip.rate"}},
		{"rate without burst", "limits:\n  handshakes_per_ip: {rate: 5, burst: 0}\n", []string{"limits.handshakes_per_ip.burst"}},
		{"zero handshake timeout", "limits:\n  handshake_timeout: 0s\n", []string{"limits.handshake_timeout"}},
		{"unknown limits key", "limits:\n  max_conns: 5\n", []string{"max_conns"}},
		{"kind named like a server frame", "pipelines:\n  ack:\n    - use: broadcast\n", []string{"pipelines.ack", "frame the server sends"}},
		{"kind named error", "pipelines:\n  error: []\n", []string{"pipelines.error"}},
		{"kind with a bad name", "pipelines:\n  type-ing:\n    - use: broadcast\n", []string{"pipelines.type-ing", "a-z, 0-9 and _"}},
		{"kind name too long", "pipelines:\n  " + strings.Repeat("k", 33) + ":\n    - use: broadcast\n", []string{"pipelines.kkk", "1-32"}},
		{"custom kind step without use", "pipelines:\n  typing:\n    - with: {a: 1}\n", []string{"pipelines.typing[0]", "use"}},
		{"ref ttl too short", "websocket:\n  ref_ttl: 10ms\n", []string{"websocket.ref_ttl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, tt.body)
			_, err := Load(p, nil)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, p) {
				t.Errorf("error %q does not name the file", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadLimitsFromEnv(t *testing.T) {
	t.Setenv("CHATSERVER_LIMITS_MAX_CONNS_PER_IP", "7")
	t.Setenv("CHATSERVER_LIMITS_HANDSHAKE_TIMEOUT", "3s")
	p := writeFile(t, "limits:\n  handshakes_per_ip: {rate: 0}\n  exempt_loopback: false\n")
	cfg, err := Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Limits
	if l.MaxConnsPerIP != 7 || l.HandshakeTimeout != 3*time.Second || l.HandshakesPerIP.Rate != 0 ||
		l.HandshakesPerIP.Burst != 20 || l.ExemptLoopback || l.MaxRooms != 10000 {
		t.Fatalf("limits = %+v", l)
	}
}

func TestAPIKeys(t *testing.T) {
	long := strings.Repeat("k", MinAPIKeyBytes)
	tests := []struct {
		name    string
		file    string
		env     map[string]string
		wantErr string // "" for a config that loads
		keys    int
	}{
		{"none", "", nil, "", 0},
		{"one in the file", "api:\n  keys: [\"" + long + "\"]\n", nil, "", 1},
		{"short key named by index", "api:\n  keys: [\"" + long + "\", \"short-secret\"]\n", nil, "api.keys[1]: must be at least 32 bytes, got 12", 0},
		{"from keys_env", "api:\n  keys_env: CHAT_TEST_KEYS\n", map[string]string{"CHAT_TEST_KEYS": long + " , " + long + "x"}, "", 2},
		{"short key in keys_env", "api:\n  keys_env: CHAT_TEST_KEYS\n", map[string]string{"CHAT_TEST_KEYS": long + ",tiny-secret"}, "api.keys_env: $CHAT_TEST_KEYS: key 1 must be at least 32 bytes, got 11", 0},
		{"keys_env not a name", "api:\n  keys_env: \"A=B\"\n", nil, "api.keys_env: must be the name of an environment variable", 0},
		{"CHATSERVER_API_KEYS, comma-separated", "", map[string]string{"CHATSERVER_API_KEYS": long + "," + long + "y"}, "", 2},
		{"protect_reads without a key", "api:\n  protect_reads: true\n", nil, "api.protect_reads: needs a key", 0},
		{"keys_env unset is no key", "api:\n  keys_env: CHAT_TEST_UNSET\n", nil, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			cfg, err := Load(path, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "short-secret") || strings.Contains(err.Error(), "tiny-secret") {
					t.Fatalf("the error shows the key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(cfg.API.AllKeys()); got != tt.keys || cfg.API.Enabled() != (tt.keys > 0) {
				t.Fatalf("%d keys (enabled %t), want %d", got, cfg.API.Enabled(), tt.keys)
			}
			for _, s := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg.API), cfg.API.String()} {
				if strings.Contains(s, long) {
					t.Fatalf("a printed config shows a key: %s", s)
				}
			}
			if tt.keys > 0 && strings.Count(cfg.API.String(), "<redacted>") != tt.keys {
				t.Fatalf("String() = %q, want %d <redacted>", cfg.API.String(), tt.keys)
			}
		})
	}
}
