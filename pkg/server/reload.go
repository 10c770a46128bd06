package server

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// reloadDebounce is how long the config file must stay quiet before it is
// reloaded: editors write a file in several steps (truncate, write, rename).
const reloadDebounce = 150 * time.Millisecond

// WatchConfig hot-reloads the pipelines: whenever the file at path changes,
// it calls load, builds the new `pipelines:` (with the new `plugins.timeout`)
// and swaps them in atomically. Connected clients stay connected; events
// already running finish in the old pipelines. A config that does not load
// or build is refused with a log line, and the running pipelines stay. Other
// sections are not hot-reloaded: a change to them is logged as needing a
// restart.
//
// It watches the file's directory, not the file, because editors and config
// managers replace files by rename. It blocks until ctx is done, then returns
// nil, having stopped everything it started; it returns an error only if
// watching cannot start.
func (s *Server) WatchConfig(ctx context.Context, path string, load func() (*config.Config, error)) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(abs)); err != nil {
		return fmt.Errorf("watching %s: %w", path, err)
	}
	s.log.Info("watching config for pipeline changes", "path", path)

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Clean(ev.Name) != abs || ev.Op == fsnotify.Chmod {
				continue
			}
			timer.Reset(reloadDebounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			s.log.Warn("config watch error", "path", path, "err", err)
		case <-timer.C:
			s.reload(path, load)
		}
	}
}

// reload loads the config and swaps in its pipelines, or logs why not.
func (s *Server) reload(path string, load func() (*config.Config, error)) {
	cfg, err := load()
	if err != nil {
		s.log.Error("config reload refused; the running pipelines stay", "path", path, "err", err)
		return
	}
	p, err := pipeline.Build(cfg.Pipelines, s.Deps(), pipeline.BuildOptions{Observer: s.metrics, EventTimeout: cfg.Plugins.StepTimeout()})
	if err != nil {
		s.log.Error("config reload refused; the running pipelines stay", "path", path,
			"err", (&config.Error{Source: cfg.Source, Err: err}).Error())
		return
	}
	if !sameOutsidePipelines(s.cfg, cfg) {
		s.log.Warn("config changed outside pipelines: and plugins:; those changes need a restart", "path", path)
	}
	s.SwapPipelines(p)
	s.log.Info("pipelines reloaded", "path", path, "steps", len(p.Steps()))
}

// sameOutsidePipelines reports whether a and b differ only in what hot
// reload applies.
func sameOutsidePipelines(a, b *config.Config) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	x.Pipelines, y.Pipelines = pipeline.Config{}, pipeline.Config{}
	x.Plugins, y.Plugins = config.Plugins{}, config.Plugins{}
	x.Source, y.Source = "", ""
	return reflect.DeepEqual(x, y)
}
