package pipeline

import (
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
	opts := s.Options()
	v := reflect.ValueOf(opts)
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	keys := OptionKeys(opts)
	out := make([]OptionInfo, 0, len(keys))
	k := 0
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ","); !f.IsExported() || name == "-" {
			continue
		}
		def := v.Field(i).Interface()
		if d, ok := def.(time.Duration); ok {
			def = d.String()
		}
		out = append(out, OptionInfo{Key: keys[k], Type: f.Type.String(), Default: def})
		k++
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
	v := reflect.ValueOf(opts)
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return json.Marshal(opts)
	}
	keys := OptionKeys(opts)
	b := []byte{'{'}
	k := 0
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ","); !f.IsExported() || name == "-" {
			continue
		}
		val := v.Field(i).Interface()
		if d, ok := val.(time.Duration); ok {
			val = d.String()
		}
		kb, _ := json.Marshal(keys[k])
		vb, err := json.Marshal(val)
		if err != nil {
			return nil, fmt.Errorf("option %s: %w", keys[k], err)
		}
		if k > 0 {
			b = append(b, ',')
		}
		b = append(append(append(b, kb...), ':'), vb...)
		k++
	}
	return append(b, '}'), nil
}

// String formats the option as `key type = default`.
func (o OptionInfo) String() string {
	def := o.Default
	if d, ok := def.(string); ok && o.Type == "string" {
		def = fmt.Sprintf("%q", d)
	}
	return fmt.Sprintf("%s %s = %v", o.Key, o.Type, def)
}
