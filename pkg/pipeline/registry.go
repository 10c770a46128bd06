package pipeline

import (
	"fmt"
	"sort"
	"sync"
)

// Spec describes a plugin to the registry.
type Spec struct {
	// Name is what YAML uses in `use:`. Required, unique.
	Name string
	// Description is the one line `chatserver plugins list` shows.
	Description string
	// Options returns a pointer to a new options struct filled with the
	// defaults; it must allocate afresh each call (slices and maps too),
	// since decoding writes into what it returns. The step's `with:` map is decoded onto it (mapstructure tags;
	// an unknown key is an error). If the struct has a `Validate() error`
	// method it is called after decoding. Nil: the plugin takes no options.
	Options func() any
	// New builds one instance of the plugin from the decoded options (the
	// pointer Options returned) and the services of the server it runs in.
	New func(opts any, deps Deps) (Plugin, error)
}

// NewSpec describes a plugin whose options are the struct O, typed end to
// end: defaults returns a new *O filled with the defaults (a fresh one each
// call: decoding writes into it), the step's `with:` is decoded onto it, and
// build receives it — no type assertion, and no way to hand the decoder a
// non-pointer. It is the typed form of filling Spec.Options and Spec.New by
// hand, which keeps working.
//
//	pipeline.Register(pipeline.NewSpec("shout", "upper-cases messages",
//		func() *ShoutOptions { return &ShoutOptions{Mark: "!"} },
//		func(o *ShoutOptions, _ pipeline.Deps) (pipeline.Plugin, error) { return newShout(o), nil }))
func NewSpec[O any](name, description string, defaults func() *O, build func(opts *O, deps Deps) (Plugin, error)) Spec {
	return Spec{
		Name:        name,
		Description: description,
		Options:     func() any { return defaults() },
		New:         func(opts any, deps Deps) (Plugin, error) { return build(opts.(*O), deps) },
	}
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Spec{}
)

// Register makes a plugin available by name, like database/sql.Register. Call it
// from an init function. It panics on an empty or duplicate name or a nil New:
// those are programmer errors, found the first time the binary starts.
func Register(s Spec) {
	if s.Name == "" {
		panic("pipeline: Register with an empty plugin name")
	}
	if s.New == nil {
		panic("pipeline: Register " + s.Name + " with a nil New")
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[s.Name]; dup {
		panic("pipeline: Register called twice for plugin " + s.Name)
	}
	registry[s.Name] = s
}

// Lookup returns the registered plugin called name.
func Lookup(name string) (Spec, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s, ok := registry[name]
	return s, ok
}

// Plugins returns every registered plugin, sorted by name.
func Plugins() []Spec {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]Spec, 0, len(registry))
	for _, s := range registry {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names returns the names of every registered plugin, sorted.
func Names() []string {
	specs := Plugins()
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return names
}

func unknownPlugin(name string) error {
	return fmt.Errorf("unknown plugin %q (known: %v)", name, Names())
}
