package pipeline

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzAppendJSON holds the hand-written envelope encoder to encoding/json:
// for any envelope, AppendJSON's bytes are encoding/json's (HTML escaping
// off), they decode, and they decode to the envelope itself when its strings
// are valid UTF-8 (encoding/json turns invalid bytes into U+FFFD, and so must
// AppendJSON).
func FuzzAppendJSON(f *testing.F) {
	f.Add("0192f0c4-7e17-46eb-9f1e-11f5707ea0ec", "message", "lobby", "alice", "hello",
		`<div class="message">hello</div>`, "2026-11-25 21:04:05", int64(7), int64(1764104645123))
	f.Add("", "", "", "", "", "", "", int64(0), int64(0))
	f.Add("\u2028\u2029", "online", "张三", "\x00\x01\b\f\n\r\t\x1f\x7f", "\"\\ <>& \xff\xfe \xe2\x80 é😀",
		"&amp;</script>", "\ud7ff\ue000\U0010ffff", int64(-1), int64(-9223372036854775808))
	f.Fuzz(func(t *testing.T, id, typ, room, username, body, html, datetime string, clientID, ts int64) {
		e := Envelope{ID: id, Type: typ, Room: room, ClientID: clientID, Username: username,
			Body: body, HTML: html, Datetime: datetime, TS: ts}
		want, ok := e.appendStdJSON(nil)
		if !ok {
			t.Fatalf("encoding/json refused %+v", e)
		}
		got := e.AppendJSON(nil)
		if !bytes.Equal(got, want) {
			t.Fatalf("AppendJSON\n got %s\nwant %s (encoding/json)", got, want)
		}
		var back Envelope
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("AppendJSON's output does not decode: %v\n%s", err, got)
		}
		valid := true
		for _, s := range []string{id, typ, room, username, body, html, datetime} {
			valid = valid && utf8.ValidString(s)
		}
		if valid && back != e {
			t.Fatalf("decodes to %+v, want %+v", back, e)
		}
	})
}

// SetFastJSON(false) makes AppendJSON encoding/json's output itself (the
// same bytes, so what tells them apart is the allocations encoding/json
// makes and the hand-written encoder does not).
func TestSetFastJSON(t *testing.T) {
	t.Cleanup(func() { SetFastJSON(true) })
	e := Envelope{ID: "1", Type: TypeMessage, Room: "r", Username: "u", Body: "<b>", HTML: "<i>", Datetime: "d", TS: 1}
	want, _ := e.appendStdJSON(nil)
	buf := make([]byte, 0, 512)
	for _, fast := range []bool{true, false} {
		SetFastJSON(fast)
		if got := e.AppendJSON(buf[:0]); !bytes.Equal(got, want) {
			t.Fatalf("fast %v: got %s, want %s", fast, got, want)
		}
		allocs := testing.AllocsPerRun(10, func() { e.AppendJSON(buf[:0]) })
		if fast != (allocs == 0) {
			t.Fatalf("fast %v: %v allocations per encoding", fast, allocs)
		}
	}
}
