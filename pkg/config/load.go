package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/chatserver/chatserver"
)

// EnvPrefix is the prefix of environment overrides: CHATSERVER_SERVER_ADDR
// sets server.addr.
const EnvPrefix = "CHATSERVER"

// Load reads the config file at path (the embedded default when path is ""),
// applies CHATSERVER_* environment variables and then the given flags (each
// bound to the key its annotation names, see BindFlag), decodes it strictly
// (an unknown key is an error) and validates it.
func Load(path string, flags *pflag.FlagSet) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	src := "embedded default config"
	// Defaults come from the embedded file, so a short user file only says
	// what it changes. A pipeline the file lists replaces the default one of
	// that kind whole (lists do not merge); the kinds it leaves out keep theirs.
	if err := v.ReadConfig(bytes.NewReader(chatserver.DefaultConfig)); err != nil {
		return nil, &Error{Source: src, Err: fmt.Errorf("parsing: %w", err)}
	}
	if path != "" {
		src = path
		data, err := os.ReadFile(path) //nolint:gosec // reading the config file the user named is the point
		if err != nil {
			return nil, &Error{Source: path, Err: errors.Unwrap(err)}
		}
		user := viper.New()
		user.SetConfigType("yaml")
		if err := user.ReadConfig(bytes.NewReader(data)); err != nil {
			return nil, &Error{Source: path, Err: fmt.Errorf("not valid YAML: %s", strings.Join(strings.Fields(err.Error()), " "))}
		}
		if err := checkKindCase(data); err != nil {
			return nil, &Error{Source: path, Key: err.key, Err: err.err}
		}
		for k := range user.GetStringMap("pipelines") {
			if key := "pipelines." + k; user.IsSet(key) {
				steps := user.Get(key)
				if steps == nil {
					steps = []any{} // `message:` with nothing under it: an empty pipeline
				}
				v.Set(key, steps)
			}
		}
		if err := v.MergeConfigMap(user.AllSettings()); err != nil {
			return nil, &Error{Source: path, Err: err}
		}
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if flags != nil {
		var ferr error
		flags.VisitAll(func(f *pflag.Flag) {
			if key, ok := f.Annotations[flagKey]; ok && len(key) == 1 {
				if err := v.BindPFlag(key[0], f); err != nil && ferr == nil {
					ferr = err
				}
			}
		})
		if ferr != nil {
			return nil, ferr
		}
	}

	cfg := &Config{}
	// AllSettings merges file, env (for keys the file has) and flags; viper's
	// Unmarshal with ErrorUnused catches keys we do not know.
	err := v.Unmarshal(cfg, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		)
	})
	if err != nil {
		return nil, &Error{Source: src, Err: cleanDecodeError(err)}
	}
	cfg.Source = src
	// The environment's comma-separated list is split, not trimmed:
	// "a:7000, b:7000" would dial the host " b". Spaces never belong in an
	// address, so trim every entry, from the file too.
	for i, a := range cfg.Redis.ClusterAddrs {
		cfg.Redis.ClusterAddrs[i] = strings.TrimSpace(a)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// kindCaseError names a pipeline key that is not lower case.
type kindCaseError struct {
	key string
	err error
}

// checkKindCase refuses pipeline names with capitals. Viper lowercases every
// key, so `Typing:` would silently declare the kind "typing"; a kind is an
// envelope type that clients match exactly, so the file must say it as it is.
func checkKindCase(data []byte) *kindCaseError {
	var raw struct {
		Pipelines map[string]any `yaml:"pipelines"`
	}
	if yaml.Unmarshal(data, &raw) != nil {
		return nil // viper has read it: its error, if any, is the one to show
	}
	for k := range raw.Pipelines {
		if k != strings.ToLower(k) {
			return &kindCaseError{key: "pipelines." + k, err: fmt.Errorf("kind %q: a kind is 1-32 characters of a-z, 0-9 and _, starting with a letter", k)}
		}
	}
	return nil
}

// flagKey is the pflag annotation that ties a flag to a config key.
const flagKey = "chatserver_config_key"

// BindFlag marks flag name in fs as overriding config key (e.g. "addr" →
// "server.addr"); Load applies it when the flag was set.
func BindFlag(fs *pflag.FlagSet, name, key string) {
	if err := fs.SetAnnotation(name, flagKey, []string{key}); err != nil {
		panic("config: BindFlag: " + err.Error())
	}
}

// cleanDecodeError drops mapstructure's multi-line preamble so the CLI can
// print one line: `'server' has invalid keys: adr`.
func cleanDecodeError(err error) error {
	var u interface{ Unwrap() []error }
	if errors.As(err, &u) {
		var parts []string
		for _, e := range u.Unwrap() {
			parts = append(parts, oneLine(e.Error()))
		}
		return errors.New(strings.Join(parts, "; "))
	}
	msg := strings.TrimPrefix(oneLine(err.Error()), "decoding failed due to the following error(s): ")
	return errors.New(msg)
}

// oneLine joins the lines of a (possibly nested, errors.Join-ed) message
// with "; ", so every config error prints on one line.
func oneLine(msg string) string {
	var lines []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" && l != "decoding failed due to the following error(s):" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}
