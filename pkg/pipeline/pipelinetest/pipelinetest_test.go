package pipelinetest_test

import (
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
	"github.com/chatserver/chatserver/pkg/pipeline/pipelinetest"
)

// The kit runs every kind, records direct messages and refuses a direct
// message to nobody as the server does.
func TestKit(t *testing.T) {
	room := pipelinetest.New(t, `
join: [{use: username}, {use: broadcast}]
message: [{use: username}, {use: validate}, {use: history}, {use: broadcast}]
typing: [{use: username}, {use: broadcast}]
`)
	alice, bob := room.Member("", pipelinetest.NameCookie("alice")), room.Member("", pipelinetest.NameCookie("bob"))
	if on := alice.Join().Broadcast(); on.Type != pipeline.TypeOnline || on.Username != "alice" {
		t.Fatalf("join: %+v", on)
	}
	bob.Join()
	if ty := alice.Run(pipeline.Inbound{Type: "typing", Data: []byte(`{"x":1}`)}).Broadcast(); ty.Type != "typing" || string(ty.Data) != `{"x":1}` {
		t.Fatalf("typing: %+v", ty)
	}
	dm := alice.Run(pipeline.Inbound{Body: "hi", To: "bob"})
	if dm.Err != nil || dm.Published[0].To != "bob" || len(dm.Kept) != 0 {
		t.Fatalf("direct message: %+v", dm)
	}
	if r := alice.Run(pipeline.Inbound{Body: "hi", To: "carol"}); r.Err == nil || r.Err.Code != pipeline.CodeNoRecipient {
		t.Fatalf("to nobody: %+v", r.Err)
	}
	if r := alice.Run(pipeline.Inbound{Type: "reaction"}); r.Err == nil || r.Err.Code != pipeline.CodeUnknownType {
		t.Fatalf("unknown kind: %+v", r.Err)
	}
	alice.Say("kept")
	if h := room.History(); len(h) != 1 || h[0].Body != "kept" {
		t.Fatalf("history %+v", h)
	}
	if _, err := pipelinetest.Build("message: [{use: nope}]"); err == nil || !strings.Contains(err.Error(), `unknown plugin "nope"`) {
		t.Fatalf("build error %v", err)
	}
}
