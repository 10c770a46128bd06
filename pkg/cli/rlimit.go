package cli

import (
	"log/slog"

	"github.com/chatserver/chatserver/internal/fdlimit"
)

// raiseFileLimit lifts the soft open-file limit to the hard one (see
// fdlimit) and logs it. Failure is logged, not fatal.
func raiseFileLimit(log *slog.Logger) {
	limit, err := fdlimit.Raise()
	if err != nil {
		log.Warn("raising the open-file limit", "err", err)
		return
	}
	log.Info("open-file limit", "limit", limit)
}
