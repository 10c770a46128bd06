package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// OptionInfo describes one `with:` key of a plugin, for `chatserver plugins
// list`.
type OptionInfo struct {
	Key     string `json:"key"`
	Type    string `json:"type"`    // the Go type: int, float64, string, time.Duration, []string, …
	Default any    `json:"default"` // the value a step without this key gets; durations as strings ("2s")
}

// OptionInfo describes the `with:` keys of s, in field order, with the defaults
// s.Options returns. It is nil for a plugin without options.
func (s Spec) OptionInfo() []OptionInfo {
	if s.Options == nil {
		return nil
	}
	return optionFields(s.Options())
}

// optionFields lists the `with:` keys of an options struct with their
// values, in field order (durations as strings).
func optionFields(opts any) []OptionInfo {
	v := reflect.ValueOf(opts)
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	keys := OptionKeys(opts)
	out := make([]OptionInfo, 0, len(keys))
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ","); !f.IsExported() || name == "-" {
			continue
		}
		val := v.Field(i).Interface()
		if d, ok := val.(time.Duration); ok {
			val = d.String()
		}
		out = append(out, OptionInfo{Key: keys[len(out)], Type: f.Type.String(), Default: val})
	}
	return out
}

// EncodeOptions encodes a decoded options struct as a JSON object keyed by
// the `with:` keys people write (mapstructure tags), in field order — not by
// Go field names, as encoding/json would. Values are encoded by encoding/json
// (so a Secret prints as "<redacted>"); durations as strings ("2s").
func EncodeOptions(opts any) ([]byte, error) {
	if opts == nil {
		return []byte("{}"), nil
	}
	fields := optionFields(opts)
	if fields == nil {
		return json.Marshal(opts)
	}
	// Not HTML-escaped: it is read by people ("<redacted>", not "\u003credacted\u003e").
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	buf.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			buf.WriteByte(',')
		}
		for j, v := range []any{f.Key, f.Default} {
			if err := enc.Encode(v); err != nil {
				return nil, fmt.Errorf("option %s: %w", f.Key, err)
			}
			buf.Truncate(buf.Len() - 1) // Encode's newline
			if j == 0 {
				buf.WriteByte(':')
			}
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// String formats the option as `key type = default`.
func (o OptionInfo) String() string {
	def := o.Default
	if d, ok := def.(string); ok && o.Type == "string" {
		def = fmt.Sprintf("%q", d)
	}
	return fmt.Sprintf("%s %s = %v", o.Key, o.Type, def)
}
