package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds Load any file: it must not panic or hang, and must either
// return a config that validates or an *Error on one line naming the file.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"", "server:\n  addr: 127.0.0.1:1\n", "server: [\n", "limits:\n  handshakes_per_ip: {rate: 5, burst: 0}\n",
		"websocket:\n  ping_interval: -1s\n", "history:\n  size: 99999999999999999999\n",
		"pipelines:\n  message:\n    - use: validate\n      with: {max_length: 10}\n", "pipelines:\n  join:\n",
		"a: &a [*a, *a]\n", "a: &a [1,1]\nb: &b [*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b]\nserver: *c\n",
		"server:\n  allowed_origins: \"a,b\"\n", "\xff\xfe", "- 1\n- 2\n", "limits: 5\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return // config files are small; bound the fuzzer's work
		}
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(p, nil)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %q is not a one-line *Error naming the file", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load returned a config that does not validate: %v", err)
		}
	})
}
