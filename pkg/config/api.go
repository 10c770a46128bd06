package config

import (
	"fmt"
	"os"
	"strings"
)

// MinAPIKeyBytes is the shortest server API key accepted: a key is a bearer
// secret, and a short one can be guessed.
const MinAPIKeyBytes = 32

// API configures the server API for backends (POST, DELETE, kick, rooms).
// With no key it is off: its write routes answer 404.
type API struct {
	// Keys are the bearer keys a request may carry (Authorization: Bearer
	// KEY), each at least MinAPIKeyBytes bytes. Several keys let a key be
	// rotated without downtime. Default none.
	Keys []string `mapstructure:"keys"`
	// KeysEnv names an environment variable holding more keys, separated by
	// commas, so that keys need not be written into a config file. Default
	// "" (none).
	KeysEnv string `mapstructure:"keys_env"`
	// ProtectReads puts the read routes (history, members, the rooms list)
	// behind a key too. Default false: they are public, as before the API.
	ProtectReads bool `mapstructure:"protect_reads"`
}

// AllKeys returns Keys followed by the keys of the KeysEnv variable (read
// now; blanks around each key are trimmed and empty items skipped).
func (a API) AllKeys() []string {
	keys := append([]string(nil), a.Keys...)
	if a.KeysEnv == "" {
		return keys
	}
	for _, k := range strings.Split(os.Getenv(a.KeysEnv), ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// Enabled reports whether at least one key is configured.
func (a API) Enabled() bool { return len(a.AllKeys()) > 0 }

// String describes the section without its keys: a config printed in a
// log line or by `config check` must never show a secret.
func (a API) String() string {
	keys := a.AllKeys()
	if len(keys) == 0 {
		return fmt.Sprintf("off (no keys), protect_reads %t", a.ProtectReads)
	}
	red := make([]string, len(keys))
	for i := range red {
		red[i] = "<redacted>"
	}
	s := fmt.Sprintf("keys [%s]", strings.Join(red, " "))
	if a.KeysEnv != "" {
		s += fmt.Sprintf(" (with $%s)", a.KeysEnv)
	}
	return s + fmt.Sprintf(", protect_reads %t", a.ProtectReads)
}

// GoString is String, for %#v.
func (a API) GoString() string { return "config.API{" + a.String() + "}" }

// validate checks every key's length. A bad key is named by its index,
// never shown.
func (a API) validate(bad func(key, format string, args ...any) error) error {
	if err := a.validateKeys(bad); err != nil {
		return err
	}
	if a.ProtectReads && !a.Enabled() {
		return bad("api.protect_reads", "needs a key (api.keys or api.keys_env): no request could read")
	}
	return nil
}

func (a API) validateKeys(bad func(key, format string, args ...any) error) error {
	for i, k := range a.Keys {
		if len(k) < MinAPIKeyBytes {
			return bad(fmt.Sprintf("api.keys[%d]", i), "must be at least %d bytes, got %d", MinAPIKeyBytes, len(k))
		}
	}
	if a.KeysEnv == "" {
		return nil
	}
	if strings.TrimSpace(a.KeysEnv) != a.KeysEnv || strings.ContainsAny(a.KeysEnv, "=,") {
		return bad("api.keys_env", "must be the name of an environment variable, got %q", a.KeysEnv)
	}
	env := a.AllKeys()[len(a.Keys):]
	for i, k := range env {
		if len(k) < MinAPIKeyBytes {
			return bad("api.keys_env", "$%s: key %d must be at least %d bytes, got %d", a.KeysEnv, i, MinAPIKeyBytes, len(k))
		}
	}
	return nil
}
