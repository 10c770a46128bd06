package plugins_test

import (
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
	"github.com/chatserver/chatserver/pkg/pipeline/pipelinetest"
)

// The built-ins with custom kinds and direct messages, through the kit.
func TestBuiltinsWithKindsAndDirectMessages(t *testing.T) {
	room := pipelinetest.New(t, `
message:
  - use: username
  - use: validate
  - use: ratelimit
    with: { rate: 0.001, burst: 2 }
  - use: render_html
  - use: history
  - use: broadcast
reaction:
  - use: username
  - use: validate
    with: { max_length: 4 }
  - use: ratelimit
    with: { rate: 0.001, burst: 1 }
  - use: render_html
  - use: history
  - use: broadcast
typing:
  - use: username
  - use: validate
  - use: broadcast
`)
	alice := room.Member("alice")
	room.Member("bob")

	typing := alice.Run(pipeline.Inbound{Type: "typing"})
	if typing.Err != nil || typing.Broadcast().Type != "typing" || typing.Broadcast().Body != "" || len(typing.Kept) != 0 {
		t.Fatalf("typing (no body needed, not kept without a history step): %+v", typing)
	}
	r := alice.Run(pipeline.Inbound{Type: "reaction", Body: "<3"})
	if r.Err != nil || r.Broadcast().Type != "reaction" || !strings.Contains(r.Broadcast().HTML, "&lt;3") || len(r.Kept) != 1 {
		t.Fatalf("reaction (validated, rendered, kept by its pipeline's history step): %+v", r)
	}
	if r := alice.Run(pipeline.Inbound{Type: "reaction", Body: "+1"}); r.Err == nil || r.Err.Code != pipeline.CodeRateLimited {
		t.Fatalf("second reaction: %+v, want rate_limited (a bucket of 1)", r.Err)
	}
	if r := room.Member("carol").Run(pipeline.Inbound{Type: "reaction", Body: "too long"}); r.Err == nil || r.Err.Code != pipeline.CodeTooLong {
		t.Fatalf("long reaction: %+v", r.Err)
	}
	// Messages have buckets of their own: the reactions did not use them.
	for i := range 2 {
		if m := alice.Say("hi"); m.Err != nil {
			t.Fatalf("message %d: %v", i, m.Err)
		}
	}
	dm := alice.Run(pipeline.Inbound{Body: "psst", To: "bob"})
	if dm.Err == nil || dm.Err.Code != pipeline.CodeRateLimited {
		t.Fatalf("a third message: %+v, want rate_limited", dm.Err)
	}
	dm = room.Member("dave").Run(pipeline.Inbound{Body: "psst", To: "bob"})
	if dm.Err != nil || dm.Published[0].To != "bob" || dm.Published[0].Keep || len(dm.Kept) != 0 {
		t.Fatalf("a direct message is published to bob and never kept: %+v", dm)
	}
}
