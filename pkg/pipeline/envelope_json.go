package pipeline

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends the JSON encoding of e to b: byte for byte what a
// json.Encoder with SetEscapeHTML(false) produces, less its newline (a test
// and FuzzAppendJSON hold the two equal), without reflection. Every message
// is encoded once, so this is on the hot path; a new Envelope field must be
// added here too (the test fails until it is). After SetFastJSON(false) it
// is encoding/json's output itself.
func (e *Envelope) AppendJSON(b []byte) []byte {
	if stdJSON.Load() {
		if out, ok := e.appendStdJSON(b); ok {
			return out
		}
	}
	b = append(b, `{"id":`...)
	b = appendJSONString(b, e.ID)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"room":`...)
	b = appendJSONString(b, e.Room)
	b = append(b, `,"client_id":`...)
	b = strconv.AppendInt(b, e.ClientID, 10)
	b = append(b, `,"username":`...)
	b = appendJSONString(b, e.Username)
	if e.To != "" {
		b = append(b, `,"to":`...)
		b = appendJSONString(b, e.To)
	}
	if e.Body != "" {
		b = append(b, `,"body":`...)
		b = appendJSONString(b, e.Body)
	}
	if e.HTML != "" {
		b = append(b, `,"html":`...)
		b = appendJSONString(b, e.HTML)
	}
	if len(e.Data) > 0 {
		b = append(b, `,"data":`...)
		b = appendCompact(b, e.Data)
	}
	b = append(b, `,"datetime":`...)
	b = appendJSONString(b, e.Datetime)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, e.TS, 10)
	return append(b, '}')
}

// appendCompact appends raw JSON without insignificant space, as
// encoding/json writes a json.RawMessage. Data that is not valid JSON (which
// Event.Frame refuses before encoding) is written as {}: a frame is never
// broken JSON.
func appendCompact(b, raw []byte) []byte {
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, raw); err != nil {
		return append(b, '{', '}')
	}
	return buf.Bytes()
}

// jsonSize is a capacity that usually fits e's encoding after escaping.
func (e *Envelope) jsonSize() int {
	n := len(e.ID) + len(e.Type) + len(e.Room) + len(e.Username) + len(e.To) + len(e.Body) + len(e.HTML) + len(e.Data) + len(e.Datetime)
	// Rendered HTML is dense in <, > and " (6 and 2 bytes escaped).
	return 128 + n + n/8 + len(e.HTML)*5/8
}

const hexDigits = "0123456789abcdef"

// jsonPlain marks the bytes that encoding/json copies as they are with HTML
// escaping off: printable ASCII except " and \\. (Bytes from 0x80 start UTF-8
// sequences, which the slow path checks.)
//
// Frames are not HTML-escaped (no \u003c for <): they are JSON read by
// JSON.parse, never embedded in a page, and the `html` field is mostly tags —
// escaping them made each frame longer for every member (each tag costs 10
// bytes more) and was the larger part of encoding time. The protocol's
// example frames have them plain too.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// jsonEscapes are the short escapes of the ASCII bytes that are not plain;
// the others are written as \\u00XX.
var jsonEscapes = [utf8.RuneSelf]string{
	'\\': `\\`, '"': `\"`, '\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`,
}

// appendJSONString is encoding/json's appendString with escapeHTML off
// (json.Encoder.SetEscapeHTML(false)).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		for i < len(s) && jsonPlain[s[i]] { // the common case: a run of plain ASCII
			i++
		}
		if i >= len(s) {
			break
		}
		if c := s[i]; c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			if e := jsonEscapes[c]; e != "" {
				b = append(b, e...)
			} else {
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
