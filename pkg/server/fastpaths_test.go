package server_test

import (
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// The test binary applies fast_paths.envelope_json as `chatserver serve`
// does (it is process-wide, not a server's), so that
// CHATSERVER_FAST_PATHS_ENVELOPE_JSON=false runs every test here with
// encoding/json; the other fast paths follow each test server's config
// (make test runs this package with all of them off too).
func init() {
	if cfg, err := config.Load("", nil); err == nil {
		pipeline.SetFastJSON(cfg.FastPaths.EnvelopeJSON)
	}
}
