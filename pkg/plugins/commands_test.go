package plugins

import (
	"context"
	"strings"
	"testing"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

type fakeMembers []pipeline.Member

func (m fakeMembers) Members(context.Context, string) ([]pipeline.Member, error) { return m, nil }

func TestCommandsNeedsMembers(t *testing.T) {
	_, err := pipeline.Build(pipeline.Config{pipeline.Message: []pipeline.Step{step("commands", nil)}}, pipeline.Deps{}, pipeline.BuildOptions{})
	if err == nil || !strings.Contains(err.Error(), "member list") {
		t.Fatalf("err = %v", err)
	}
}

// A name proven at join (signed cookie or JWT) cannot be changed with /nick.
func TestCommandsNickRefusedForProvenNames(t *testing.T) {
	deps, _, _ := testDeps(t)
	deps.Members = fakeMembers{}
	p := build(t, pipeline.Config{pipeline.Message: []pipeline.Step{step("commands", nil)}}, deps)
	s := newSender(1)
	s.SetUsername("alice")
	s.SetValue(verifiedKey{}, "alice")
	err := p.Run(context.Background(), messageEvent(s, "/nick mallory", nil))
	if code(err) != pipeline.CodeRejected || s.Username() != "alice" {
		t.Fatalf("err = %v, name %q: a proven name was changed", err, s.Username())
	}
}
