package pipeline

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzAppendJSON holds the hand-written envelope encoder to encoding/json:
// for any envelope whose data is JSON, AppendJSON's bytes are
// encoding/json's (HTML escaping off, data compacted), they decode, and they
// decode to the envelope itself when its strings are valid UTF-8
// (encoding/json turns invalid bytes into U+FFFD, and so must AppendJSON).
// Data that is not JSON, which encoding/json refuses (and Event.Frame never
// encodes), comes out as {}: still a valid frame.
func FuzzAppendJSON(f *testing.F) {
	f.Add("0192f0c4-7e17-46eb-9f1e-11f5707ea0ec", "message", "lobby", "alice", "", "hello",
		`<div class="message">hello</div>`, []byte(nil), "2026-11-25 21:04:05", int64(7), int64(1764104645123))
	f.Add("", "", "", "", "", "", "", []byte{}, "", int64(0), int64(0))
	f.Add("\u2028\u2029", "online", "张三", "\x00\x01\b\f\n\r\t\x1f\x7f", "bob", "\"\\ <>& \xff\xfe \xe2\x80 é😀",
		"&amp;</script>", []byte(` { "a" : [1, 2.5e3, "<x>\u2028"], "b":{ }, "c": null } `), "\ud7ff\ue000\U0010ffff",
		int64(-1), int64(-9223372036854775808))
	f.Add("1", "typing", "r", "u", "", "", "", []byte(`{"x":`), "d", int64(1), int64(2))
	f.Fuzz(func(t *testing.T, id, typ, room, username, to, body, html string, data []byte, datetime string, clientID, ts int64) {
		e := Envelope{ID: id, Type: typ, Room: room, ClientID: clientID, Username: username, To: to,
			Body: body, HTML: html, Data: data, Datetime: datetime, TS: ts}
		got := e.AppendJSON(nil)
		var back Envelope
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("AppendJSON's output does not decode: %v\n%s", err, got)
		}
		if len(data) > 0 && !json.Valid(data) {
			if string(back.Data) != "{}" {
				t.Fatalf("data %q that is not JSON came out as %s", data, back.Data)
			}
			return
		}
		want, ok := e.appendStdJSON(nil)
		if !ok {
			t.Fatalf("encoding/json refused %+v", e)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("AppendJSON\n got %s\nwant %s (encoding/json)", got, want)
		}
		valid := true
		for _, s := range []string{id, typ, room, username, to, body, html, datetime} {
			valid = valid && utf8.ValidString(s)
		}
		if valid {
			e.Data = compact(t, data)
			if !back.same(&e) {
				t.Fatalf("decodes to %+v, want %+v", back, e)
			}
		}
	})
}

// compact is raw without insignificant space (nil when empty).
func compact(t *testing.T, raw []byte) json.RawMessage {
	if len(raw) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
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
