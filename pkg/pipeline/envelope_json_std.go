package pipeline

import (
	"bytes"
	"encoding/json"
	"sync/atomic"
)

// stdJSON is set when envelopes are encoded by encoding/json (SetFastJSON).
var stdJSON atomic.Bool

// SetFastJSON chooses how every envelope in the process is encoded:
// AppendJSON's hand-written encoder (true, the default) or encoding/json
// (false), the reference it stands in for, which gives the same bytes with
// reflection and allocations. It is a process-wide setting, like GOGC: the
// program's main applies it once at start (`chatserver serve` applies
// fast_paths.envelope_json), and tests that run both ways.
func SetFastJSON(on bool) { stdJSON.Store(!on) }

// appendStdJSON appends e as a json.Encoder with SetEscapeHTML(false)
// encodes it, less the newline; ok is false if encoding/json refuses it.
func (e *Envelope) appendStdJSON(b []byte) (_ []byte, ok bool) {
	buf := bytes.NewBuffer(b)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return b, false
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), true
}
