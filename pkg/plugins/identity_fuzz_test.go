package plugins

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// FuzzIdentity feeds any credential to the signed and jwt username modes: no
// panic, and nothing but a credential made with the secret is accepted.
func FuzzIdentity(f *testing.F) {
	exp := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	good, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"name": "alice", "exp": exp}).SignedString([]byte(testSecret))
	for _, s := range []string{SignUsername([]byte(testSecret), "alice"), good, "YWxpY2U.", ".", "a.b.c", "e30.e30.", strings.Repeat(".", 100),
		"eyJhbGciOiJub25lIn0.eyJuYW1lIjoiYWxpY2UifQ.", `"YWxpY2U.x"`} {
		f.Add(s)
	}
	signed := usernamePipelineF(f, map[string]any{"mode": "signed", "secret": testSecret})
	jwtp := usernamePipelineF(f, map[string]any{"mode": "jwt", "jwt_key": testSecret})
	f.Fuzz(func(t *testing.T, cred string) {
		for mode, p := range map[string]*pipeline.Pipelines{"signed": signed, "jwt": jwtp} {
			s := newSender(1)
			s.cookies["username"] = cred
			ev := &pipeline.Event{Kind: pipeline.Join, Sender: s}
			err := p.Run(context.Background(), ev)
			if err != nil {
				if code(err) != pipeline.CodeRejected {
					t.Fatalf("%s: %v", mode, err)
				}
				continue
			}
			// Accepted: the credential must carry a valid MAC for its name.
			name := ev.Envelope.Username
			if mode == "signed" {
				raw, verr := VerifySignedUsername([]byte(testSecret), cred)
				if verr != nil || CleanName(raw, 32) != name {
					t.Fatalf("signed accepted %q as %q", cred, name)
				}
			} else if _, perr := jwt.Parse(strings.Trim(cred, " "), func(*jwt.Token) (any, error) { return []byte(testSecret), nil },
				jwt.WithValidMethods([]string{"HS256"})); perr != nil {
				t.Fatalf("jwt accepted %q: %v", cred, perr)
			}
		}
	})
}

func usernamePipelineF(f *testing.F, with map[string]any) *pipeline.Pipelines {
	p, err := pipeline.Build(pipeline.Config{pipeline.Join: []pipeline.Step{step("username", with)}}, pipeline.Deps{}, pipeline.BuildOptions{})
	if err != nil {
		f.Fatal(err)
	}
	return p
}
