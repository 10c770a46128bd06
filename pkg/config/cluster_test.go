package config

import (
	"errors"
	"strings"
	"testing"
)

// redis.cluster_addrs from a file and from the environment (comma-separated),
// and what the config refuses around it.
func TestRedisClusterConfig(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		env     string
		wantKey string // "" = valid
		want    []string
	}{
		{name: "default: no cluster", file: "server:\n  addr: 127.0.0.1:1\n"},
		{name: "file", file: "redis:\n  cluster_addrs: [\"10.0.0.1:7000\", \"10.0.0.2:7000\"]\n",
			want: []string{"10.0.0.1:7000", "10.0.0.2:7000"}},
		{name: "env list", file: "server:\n  addr: 127.0.0.1:1\n", env: "127.0.0.1:7001,127.0.0.1:7002",
			want: []string{"127.0.0.1:7001", "127.0.0.1:7002"}},
		{name: "env list with spaces", file: "server:\n  addr: 127.0.0.1:1\n", env: " 127.0.0.1:7001, 127.0.0.1:7002 ,127.0.0.1:7003",
			want: []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"}},
		{name: "file entry with spaces", file: "redis:\n  cluster_addrs: [\" a:7000 \", \"redis://b:7000\\t\"]\n",
			want: []string{"a:7000", "redis://b:7000"}},
		{name: "env list with an empty entry", file: "server:\n  addr: 127.0.0.1:1\n", env: "127.0.0.1:7001, ",
			wantKey: "redis.cluster_addrs[1]"},
		{name: "URLs with one password", file: "redis:\n  cluster_addrs: [\"rediss://u:p@a:7000\", \"rediss://u:p@b:7000\", \"c:7000\"]\n",
			want: []string{"rediss://u:p@a:7000", "rediss://u:p@b:7000", "c:7000"}},
		{name: "url set too", file: "redis:\n  url: redis://10.0.0.9:6379/0\n  cluster_addrs: [\"10.0.0.1:7000\"]\n",
			wantKey: "redis.cluster_addrs"},
		{name: "not host:port", file: "redis:\n  cluster_addrs: [\"10.0.0.1\"]\n", wantKey: "redis.cluster_addrs[0]"},
		{name: "database in URL", file: "redis:\n  cluster_addrs: [\"redis://a:7000/3\"]\n", wantKey: "redis.cluster_addrs[0]"},
		{name: "URLs disagree", file: "redis:\n  cluster_addrs: [\"redis://u:p@a:7000\", \"redis://u:q@b:7000\"]\n",
			wantKey: "redis.cluster_addrs[1]"},
		{name: "braces in prefix", file: "redis:\n  key_prefix: \"{chat}:\"\n  cluster_addrs: [\"a:7000\"]\n",
			wantKey: "redis.key_prefix"},
		{name: "no partitions", file: "redis:\n  cluster_partitions: 0\n", wantKey: "redis.cluster_partitions"},
		{name: "more partitions than slots", file: "redis:\n  cluster_partitions: 16385\n", wantKey: "redis.cluster_partitions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("CHATSERVER_REDIS_CLUSTER_ADDRS", tt.env)
			}
			cfg, err := Load(writeFile(t, tt.file), nil)
			if tt.wantKey != "" {
				var ce *Error
				if !errors.As(err, &ce) || ce.Key != tt.wantKey {
					t.Fatalf("err = %v, want an error naming %s", err, tt.wantKey)
				}
				if strings.Contains(err.Error(), ":p@") || strings.Contains(err.Error(), ":q@") {
					t.Fatalf("the error shows a password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(cfg.Redis.ClusterAddrs, ",") != strings.Join(tt.want, ",") || cfg.Redis.Cluster() != (len(tt.want) > 0) {
				t.Fatalf("cluster_addrs = %q, want %q", cfg.Redis.ClusterAddrs, tt.want)
			}
			if cfg.Redis.ClusterPartitions != 64 {
				t.Fatalf("cluster_partitions = %d, want the default 64", cfg.Redis.ClusterPartitions)
			}
		})
	}
}

func TestParseClusterAddr(t *testing.T) {
	tests := []struct {
		in   string
		want ClusterAddr
		ok   bool
	}{
		{"127.0.0.1:7000", ClusterAddr{Addr: "127.0.0.1:7000"}, true},
		{"redis://a:7000", ClusterAddr{Addr: "a:7000", URL: true}, true},
		{"rediss://bob:secret@a:7000/0", ClusterAddr{Addr: "a:7000", Username: "bob", Password: "secret", TLS: true, URL: true}, true},
		{"redis://:secret@a:7000", ClusterAddr{Addr: "a:7000", Password: "secret", URL: true}, true},
		{"http://a:7000", ClusterAddr{}, false},
		{"redis://a", ClusterAddr{}, false},
		{"redis://a:7000?dial_timeout=1s", ClusterAddr{}, false},
		{":7000", ClusterAddr{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseClusterAddr(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("ParseClusterAddr(%q) = %+v, %v; want %+v, ok %v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}
