package plugins

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

const testSecret = "0123456789abcdef0123456789abcdef" // 32 bytes

func TestSignUsernameRoundTrip(t *testing.T) {
	for _, name := range []string{"alice", "张三", "a.b", "<x>", ""} {
		v := SignUsername([]byte(testSecret), name)
		if strings.ContainsAny(v, "=+/;, \"") {
			t.Errorf("cookie value %q needs quoting", v)
		}
		got, err := VerifySignedUsername([]byte(testSecret), v)
		if err != nil || got != name {
			t.Errorf("verify(sign(%q)) = %q, %v", name, got, err)
		}
	}
	// A fixed vector, so a login service in another language can check its
	// implementation (README shows the same with openssl).
	if got := SignUsername([]byte(testSecret), "alice"); got != "YWxpY2U.YHGxZOWDqw1y6QQjhzDhoDJ0i9Pxl13g7Zly3ynHLUk" {
		t.Errorf("SignUsername(alice) = %q", got)
	}
}

// joinRun runs a join through a username step with opts and returns the
// event and the error.
func joinRun(t *testing.T, with map[string]any, s *fakeSender) (*pipeline.Event, error) {
	t.Helper()
	p := usernamePipeline(t, pipeline.Join, with)
	ev := &pipeline.Event{Kind: pipeline.Join, Sender: s}
	return ev, p.Run(context.Background(), ev)
}

func TestUsernameSignedMode(t *testing.T) {
	with := map[string]any{"mode": "signed", "secret": testSecret, "cookie": "identity"}
	good := SignUsername([]byte(testSecret), "alice")
	payload, sig, _ := strings.Cut(good, ".")
	tests := []struct {
		name, cookie string
		want         string // name, or a substring of the rejection
		ok           bool
	}{
		{"valid", good, "alice", true},
		{"valid, quoted", `"` + good + `"`, "alice", true},
		{"missing", "", "sign in first", false},
		{"tampered name", SignUsername([]byte(testSecret), "mallory")[:8] + "." + sig, "signature does not match", false},
		{"tampered signature", payload + "." + sig[:len(sig)-2] + "AA", "signature does not match", false},
		{"other secret", SignUsername([]byte(strings.Repeat("x", 32)), "alice"), "signature does not match", false},
		{"plain base64 cookie", "YWxpY2U=", "NAME.SIGNATURE", false},
		{"signed blank name", SignUsername([]byte(testSecret), " \x00 "), "empty", false},
		{"huge", strings.Repeat("A", 10000) + ".x", "too long", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSender(7)
			if tt.cookie != "" {
				s.cookies["identity"] = tt.cookie
			}
			s.cookies["username"] = "bWFsbG9yeQ" // a plain cookie is not a proof
			ev, err := joinRun(t, with, s)
			if tt.ok {
				if err != nil || ev.Envelope.Username != tt.want {
					t.Fatalf("name %q, err %v; want %q", ev.Envelope.Username, err, tt.want)
				}
				return
			}
			if code(err) != pipeline.CodeRejected || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want rejected with %q", err, tt.want)
			}
		})
	}
}

// A proven name cannot be changed by a message, whatever the message step's
// mode: renames are ignored (the message goes through under the proven name).
func TestProvenNameIgnoresRenames(t *testing.T) {
	s := newSender(7)
	s.cookies["identity"] = SignUsername([]byte(testSecret), "alice")
	if _, err := joinRun(t, map[string]any{"mode": "signed", "secret": testSecret, "cookie": "identity"}, s); err != nil {
		t.Fatal(err)
	}
	for _, with := range []map[string]any{
		{"allow_rename": true}, // a plain step that would rename anyone else
		{"mode": "signed", "secret": testSecret, "cookie": "identity"},
	} {
		p := usernamePipeline(t, pipeline.Message, with)
		ev := messageEvent(s, "hi", ptr("bob"))
		if err := p.Run(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		if ev.Envelope.Username != "alice" || s.Username() != "alice" {
			t.Fatalf("with %v: renamed to %q", with, ev.Envelope.Username)
		}
	}
	// A message step in signed mode refuses a sender that never proved a name.
	p := usernamePipeline(t, pipeline.Message, map[string]any{"mode": "signed", "secret": testSecret, "cookie": "identity"})
	if err := p.Run(context.Background(), messageEvent(newSender(8), "hi", ptr("alice"))); code(err) != pipeline.CodeRejected {
		t.Fatalf("unproven message: %v", err)
	}
}

func TestUsernameSignedSecretFromEnv(t *testing.T) {
	t.Setenv("CHAT_TEST_SECRET", testSecret)
	s := newSender(7)
	s.cookies["username"] = SignUsername([]byte(testSecret), "alice")
	ev, err := joinRun(t, map[string]any{"mode": "signed", "secret_env": "CHAT_TEST_SECRET"}, s)
	if err != nil || ev.Envelope.Username != "alice" {
		t.Fatalf("%q %v", ev.Envelope.Username, err)
	}
}

func hsToken(t *testing.T, key string, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestUsernameJWTMode(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pubFile := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	rsToken := func(claims jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(rsaKey)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	exp := time.Now().Add(time.Hour).Unix()
	past := time.Now().Add(-time.Minute).Unix()
	hs := map[string]any{"mode": "jwt", "jwt_key": testSecret}
	hsAud := map[string]any{"mode": "jwt", "jwt_key": testSecret, "jwt_audience": "chat", "jwt_issuer": "login.example"}
	rs := map[string]any{"mode": "jwt", "jwt_public_key_file": pubFile, "jwt_claim": "nick"}
	good := hsToken(t, testSecret, jwt.MapClaims{"name": "alice", "exp": exp})
	parts := strings.Split(good, ".")
	forged := hsToken(t, testSecret, jwt.MapClaims{"name": "mallory", "exp": exp})
	tampered := parts[0] + "." + strings.Split(forged, ".")[1] + "." + parts[2]
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"name": "alice", "exp": exp}).SignedString(jwt.UnsafeAllowNoneSignatureType)

	tests := []struct {
		name   string
		with   map[string]any
		query  string
		cookie string
		want   string // the name, or a substring of the rejection
		ok     bool
	}{
		{"HS256 in query", hs, good, "", "alice", true},
		{"HS256 in cookie", hs, "", good, "alice", true},
		{"query beats cookie", hs, good, hsToken(t, testSecret, jwt.MapClaims{"name": "bob", "exp": exp}), "alice", true},
		{"missing", hs, "", "", "sign in first", false},
		{"expired", hs, hsToken(t, testSecret, jwt.MapClaims{"name": "alice", "exp": past}), "", "expired", false},
		{"expired within leeway", map[string]any{"mode": "jwt", "jwt_key": testSecret, "jwt_leeway": "5m"},
			hsToken(t, testSecret, jwt.MapClaims{"name": "alice", "exp": past}), "", "alice", true},
		{"no exp", hs, hsToken(t, testSecret, jwt.MapClaims{"name": "alice"}), "", "missing", false},
		{"not yet valid", hs, hsToken(t, testSecret, jwt.MapClaims{"name": "alice", "exp": exp, "nbf": exp - 60}), "", "not valid yet", false},
		{"tampered payload", hs, tampered, "", "signature is invalid", false},
		{"wrong key", hs, hsToken(t, strings.Repeat("k", 32), jwt.MapClaims{"name": "alice", "exp": exp}), "", "signature is invalid", false},
		{"alg none", hs, none, "", "signature is invalid", false},
		{"RS256 token to an HS256 server", hs, rsToken(jwt.MapClaims{"name": "alice", "exp": exp}), "", "signature is invalid", false},
		{"garbage", hs, "not.a.jwt", "", "malformed", false},
		{"no name claim", hs, hsToken(t, testSecret, jwt.MapClaims{"sub": "alice", "exp": exp}), "", `no string claim "name"`, false},
		{"aud and iss", hsAud, hsToken(t, testSecret, jwt.MapClaims{"name": "alice", "exp": exp, "aud": "chat", "iss": "login.example"}), "", "alice", true},
		{"wrong aud", hsAud, hsToken(t, testSecret, jwt.MapClaims{"name": "alice", "exp": exp, "aud": "other", "iss": "login.example"}), "", "audience", false},
		{"wrong iss", hsAud, hsToken(t, testSecret, jwt.MapClaims{"name": "alice", "exp": exp, "aud": "chat", "iss": "evil"}), "", "issuer", false},
		{"RS256", rs, rsToken(jwt.MapClaims{"nick": "李雷", "exp": exp}), "", "李雷", true},
		{"HS256 token signed with the public key", rs, func() string {
			pemBytes, _ := os.ReadFile(pubFile)
			return hsToken(t, string(pemBytes), jwt.MapClaims{"nick": "alice", "exp": exp})
		}(), "", "signature is invalid", false},
		{"RS256 expired", rs, rsToken(jwt.MapClaims{"nick": "x", "exp": past}), "", "expired", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSender(7)
			if tt.query != "" {
				s.query["token"] = tt.query
			}
			if tt.cookie != "" {
				s.cookies["username"] = tt.cookie
			}
			ev, err := joinRun(t, tt.with, s)
			if tt.ok {
				if err != nil || ev.Envelope.Username != tt.want {
					t.Fatalf("name %q, err %v; want %q", ev.Envelope.Username, err, tt.want)
				}
				return
			}
			if code(err) != pipeline.CodeRejected || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want rejected with %q", err, tt.want)
			}
		})
	}
}

func TestUsernameIdentityOptions(t *testing.T) {
	t.Setenv("CHAT_EMPTY", "")
	tests := []struct {
		name    string
		with    map[string]any
		wantErr string
	}{
		{"signed", map[string]any{"mode": "signed", "secret": testSecret}, ""},
		{"unknown mode", map[string]any{"mode": "oauth"}, `unknown mode "oauth"`},
		{"rooms_claim in plain mode", map[string]any{"rooms_claim": "rooms"}, "rooms_claim needs mode jwt"},
		{"rooms_claim in signed mode", map[string]any{"mode": "signed", "secret": strings.Repeat("s", 32), "cookie": "id", "rooms_claim": "rooms"}, "rooms_claim needs mode jwt"},
		{"signed without secret", map[string]any{"mode": "signed"}, "exactly one of secret and secret_env"},
		{"signed with both", map[string]any{"mode": "signed", "secret": testSecret, "secret_env": "X"}, "exactly one"},
		{"short secret", map[string]any{"mode": "signed", "secret": "hunter2"}, "at least 32 bytes"},
		{"empty env", map[string]any{"mode": "signed", "secret_env": "CHAT_EMPTY"}, "CHAT_EMPTY is empty"},
		{"signed with renames", map[string]any{"mode": "signed", "secret": testSecret, "allow_rename": true}, "allow_rename cannot be used"},
		{"secret in plain mode", map[string]any{"secret": testSecret}, "need mode signed or jwt"},
		{"jwt without key", map[string]any{"mode": "jwt"}, "exactly one of jwt_key"},
		{"jwt with two keys", map[string]any{"mode": "jwt", "jwt_key": testSecret, "jwt_public_key_file": "x.pem"}, "exactly one of jwt_key"},
		{"jwt key file missing", map[string]any{"mode": "jwt", "jwt_public_key_file": "/nonexistent.pem"}, "jwt_public_key_file"},
		{"jwt nowhere to look", map[string]any{"mode": "jwt", "jwt_key": testSecret, "token_param": "", "cookie": ""}, "token_param or cookie"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkBuild(t, pipeline.Join, "username", tt.with, pipeline.Deps{}, tt.wantErr)
		})
	}
}

// `config check` prints resolved options as JSON: secrets must not show.
func TestSecretsAreRedacted(t *testing.T) {
	o := DefaultUsernameOptions()
	o.Mode, o.Secret, o.JWTKey = ModeSigned, testSecret, Secret(testSecret)
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), testSecret) || !strings.Contains(string(b), "redacted") {
		t.Fatalf("options print as %s", b)
	}
}
