package pipeline

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	tests := []Envelope{
		{},
		{ID: "0192f0c4-7e17-46eb-9f1e-11f5707ea0ec", Type: TypeMessage, Room: "lobby", ClientID: 7, Username: "alice",
			Body: "hello", HTML: `<div class="message">hello</div>`, Datetime: "2026-11-25 21:04:05", TS: 1764104645123},
		{Type: TypeOnline, ClientID: -3, Username: "张三 \u2028\u2029", TS: -1},
		{Body: "\x00\x01\b\f\n\r\t\x1f\x7f \"\\ <>& \xff\xfe \xe2\x80 é😀", HTML: "&amp;</script>"},
		{Type: "typing", To: "bob", Data: json.RawMessage(` { "a" : [1, 2.5e3, "<x>\u2028"], "b":{ }, "c": null } `)},
	}
	datas := []string{"", `{}`, `{"k":1}`, "{\n \"x\" : \"<&>\" ,\"y\":[true,false,null]\t}", `{"n":{"m":{"o":"\u00e9\ud83d\ude00"}}}`}
	alphabet := []rune("ab<>&\"\\\n\t\x00\x1f\u2028é😀 ")
	rnd := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		n := rnd.IntN(12)
		var b []byte
		for i := 0; i < n; i++ {
			if rnd.IntN(8) == 0 {
				b = append(b, byte(0x80+rnd.IntN(0x80))) // invalid UTF-8
				continue
			}
			b = append(b, string(alphabet[rnd.IntN(len(alphabet))])...)
		}
		return string(b)
	}
	for i := 0; i < 2000; i++ {
		tests = append(tests, Envelope{ID: str(), Type: str(), Room: str(), ClientID: rnd.Int64() - rnd.Int64(),
			Username: str(), To: str(), Body: str(), HTML: str(), Data: json.RawMessage(datas[rnd.IntN(len(datas))]),
			Datetime: str(), TS: rnd.Int64()})
	}
	for _, e := range tests {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&e); err != nil {
			t.Fatal(err)
		}
		want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if got := e.AppendJSON(nil); string(got) != string(want) {
			t.Fatalf("AppendJSON(%+v)\n got %s\nwant %s", e, got, want)
		}
	}
}

// A field added to Envelope must be added to AppendJSON too.
func TestAppendJSONKnowsEveryField(t *testing.T) {
	if n := reflect.TypeOf(Envelope{}).NumField(); n != 11 {
		t.Fatalf("Envelope has %d fields; AppendJSON encodes 11: update it (and this test)", n)
	}
}

func TestStampCachesTheSecond(t *testing.T) {
	base := time.Date(2026, 11, 25, 21, 4, 5, 0, time.Local)
	for _, d := range []time.Duration{0, 999 * time.Millisecond, time.Second, 0, 61 * time.Second} {
		var e Envelope
		tm := base.Add(d)
		e.Stamp(tm)
		if e.Datetime != tm.Format(DatetimeLayout) || e.TS != tm.UnixMilli() {
			t.Fatalf("Stamp(%v) = %q, %d", tm, e.Datetime, e.TS)
		}
	}
}
