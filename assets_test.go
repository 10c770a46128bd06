package chatserver_test

import (
	"bytes"
	"io/fs"
	"os"
	"testing"

	"github.com/chatserver/chatserver"
)

// The served static/chatserver.js is the JavaScript client of clients/js,
// byte for byte, and the rest of static/ is still there.
func TestStaticServesTheJSClient(t *testing.T) {
	want, err := os.ReadFile(chatserver.ClientJSPath)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := fs.Sub(chatserver.Static, "static")
	if err != nil {
		t.Fatal(err)
	}
	got, err := fs.ReadFile(sub, "chatserver.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("static/chatserver.js (%d bytes) differs from %s (%d bytes)", len(got), chatserver.ClientJSPath, len(want))
	}
	st, err := fs.Stat(sub, "chatserver.js")
	if err != nil || st.Name() != "chatserver.js" || st.IsDir() {
		t.Errorf("stat static/chatserver.js: %v, %v", st, err)
	}
	for _, name := range []string{"chat.js", "chat.css"} {
		if _, err := fs.ReadFile(sub, name); err != nil {
			t.Errorf("static/%s: %v", name, err)
		}
	}
	if _, err := fs.ReadFile(sub, "nope.js"); err == nil {
		t.Error("static/nope.js: want an error")
	}
}
