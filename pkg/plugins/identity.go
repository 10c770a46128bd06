package plugins

import (
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// Identity modes of the username plugin (option `mode`).
const (
	// ModePlain trusts the client: a base64 cookie, renames, guest names (the seed).
	ModePlain = "plain"
	// ModeSigned takes the name from a cookie signed with HMAC-SHA256 by a
	// login service that shares the secret (see SignUsername).
	ModeSigned = "signed"
	// ModeJWT takes the name from a claim of a JSON Web Token (HS256 or
	// RS256), given as ?token= or in the cookie.
	ModeJWT = "jwt"
)

// maxTokenBytes bounds a credential before any decoding: a real name cookie
// or JWT is far smaller, and an attacker's megabyte header is not parsed.
const maxTokenBytes = 8 << 10

// Secret is a configuration string that must not be shown: `config check`
// prints it as "<redacted>".
type Secret string

// MarshalJSON hides the secret.
func (s Secret) MarshalJSON() ([]byte, error) {
	if s == "" {
		return []byte(`""`), nil
	}
	return []byte(`"<redacted>"`), nil
}

// verifiedKey is the sender value holding the name a connection proved at
// join. Every username step, in any mode, keeps a proven name: a plain
// message step behind a signed join step cannot rename the member.
type verifiedKey struct{}

// verifier proves the name of a connection from its handshake.
type verifier interface {
	verify(s pipeline.Sender) (proof, error)
}

// proof is what a verified credential says.
type proof struct {
	name    string
	expires time.Time // zero: the credential does not expire (signed cookies)
	// rooms are the rooms the credential may join (exact names, or prefixes
	// ending in *); checked only when rooms_claim is set.
	rooms []string
}

// allows reports whether room is one of p.rooms: an exact name, or a name
// that starts with a pattern's prefix when the pattern ends in "*".
func (p proof) allows(room string) bool {
	for _, r := range p.rooms {
		if prefix, ok := strings.CutSuffix(r, "*"); ok {
			if strings.HasPrefix(room, prefix) {
				return true
			}
		} else if r == room {
			return true
		}
	}
	return false
}

// errNoCredential is a handshake without a cookie or token.
var errNoCredential = errors.New("no credential")

// SignUsername returns the value of a signed name cookie for name:
//
//	base64url(name) "." base64url(HMAC-SHA256(secret, base64url(name)))
//
// with the unpadded URL-safe alphabet, so the value needs no quoting in a
// cookie. A login service sets it (HttpOnly, Secure, SameSite=Lax) once the
// user has signed in; chatserver checks it with the same secret.
func SignUsername(secret []byte, name string) string {
	payload := base64.RawURLEncoding.EncodeToString([]byte(name))
	return payload + "." + base64.RawURLEncoding.EncodeToString(signPayload(secret, payload))
}

func signPayload(secret []byte, payload string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// VerifySignedUsername checks a value made by SignUsername and returns the name.
func VerifySignedUsername(secret []byte, value string) (string, error) {
	if len(value) > maxTokenBytes {
		return "", errors.New("signed name is too long")
	}
	payload, sig, ok := strings.Cut(strings.Trim(value, `"`), ".")
	if !ok {
		return "", errors.New("signed name is not NAME.SIGNATURE")
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, signPayload(secret, payload)) {
		return "", errors.New("signature does not match")
	}
	name, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return "", errors.New("signed name is not base64url")
	}
	return string(name), nil
}

type signedVerifier struct {
	cookie string
	secret []byte
}

func (v *signedVerifier) verify(s pipeline.Sender) (proof, error) {
	raw, ok := s.Cookie(v.cookie)
	if !ok || raw == "" {
		return proof{}, errNoCredential
	}
	name, err := VerifySignedUsername(v.secret, raw)
	return proof{name: name}, err
}

type jwtVerifier struct {
	param, cookie, claim, roomsClaim string
	parser                           *jwt.Parser
	key                              any
}

func (v *jwtVerifier) verify(s pipeline.Sender) (proof, error) {
	raw := ""
	if v.param != "" {
		raw = s.Query(v.param)
	}
	if raw == "" && v.cookie != "" {
		raw, _ = s.Cookie(v.cookie)
	}
	if raw == "" {
		return proof{}, errNoCredential
	}
	if len(raw) > maxTokenBytes {
		return proof{}, errors.New("token is too long")
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return v.key, nil }); err != nil {
		return proof{}, tokenProblem(err)
	}
	var p proof
	var ok bool
	if p.name, ok = claims[v.claim].(string); !ok {
		return proof{}, fmt.Errorf("token has no string claim %q", v.claim)
	}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		p.expires = exp.Time
	}
	if v.roomsClaim != "" {
		rooms, err := stringList(claims[v.roomsClaim])
		if err != nil {
			return proof{}, fmt.Errorf("token claim %q: %w", v.roomsClaim, err)
		}
		p.rooms = rooms
	}
	return p, nil
}

// stringList reads a claim that lists strings: a JSON array of strings, or
// one string (one room).
func stringList(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, errors.New("missing: the token lists no rooms")
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, errors.New("must list room names (strings)")
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, errors.New("must be a list of room names")
}

// tokenProblem says briefly why a token was refused (jwt's errors chain
// several sentences).
func tokenProblem(err error) error {
	for _, e := range []error{jwt.ErrTokenExpired, jwt.ErrTokenNotValidYet, jwt.ErrTokenSignatureInvalid,
		jwt.ErrTokenInvalidAudience, jwt.ErrTokenInvalidIssuer, jwt.ErrTokenMalformed,
		jwt.ErrTokenUnverifiable, jwt.ErrTokenRequiredClaimMissing} {
		if errors.Is(err, e) {
			return e
		}
	}
	return errors.New("token is invalid")
}

// validateIdentity checks the identity options of o (mode and keys).
func (o *UsernameOptions) validateIdentity() error {
	switch o.Mode {
	case ModePlain:
		if o.Secret != "" || o.SecretEnv != "" || o.JWTKey != "" || o.JWTKeyEnv != "" || o.JWTPublicKeyFile != "" {
			return errors.New("secret, secret_env and jwt_* options need mode signed or jwt")
		}
		if o.RoomsClaim != "" {
			return errors.New("rooms_claim needs mode jwt")
		}
		return nil
	case ModeSigned:
		if (o.Secret != "") == (o.SecretEnv != "") {
			return errors.New("mode signed needs exactly one of secret and secret_env")
		}
		if o.Cookie == "" {
			return errors.New("mode signed needs a cookie")
		}
	case ModeJWT:
		n := 0
		for _, s := range []string{string(o.JWTKey), o.JWTKeyEnv, o.JWTPublicKeyFile} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			return errors.New("mode jwt needs exactly one of jwt_key, jwt_key_env (HS256) and jwt_public_key_file (RS256)")
		}
		if o.TokenParam == "" && o.Cookie == "" {
			return errors.New("mode jwt needs token_param or cookie to find the token")
		}
		if o.JWTClaim == "" {
			return errors.New("jwt_claim must not be empty")
		}
	default:
		return fmt.Errorf("unknown mode %q (known: plain, signed, jwt)", o.Mode)
	}
	if o.RoomsClaim != "" && o.Mode != ModeJWT {
		return fmt.Errorf("rooms_claim needs mode jwt (mode is %s)", o.Mode)
	}
	if o.AllowRename {
		return fmt.Errorf("allow_rename cannot be used with mode %s: names come from the signed identity", o.Mode)
	}
	return nil
}

// minSecretBytes is the shortest HMAC key accepted: 256 bits, as long as the
// SHA-256 output, so the key is not the weak point.
const minSecretBytes = 32

// newVerifier builds the verifier of o.Mode, reading secrets from the
// environment or files. Nil in plain mode.
func newVerifier(o *UsernameOptions) (verifier, error) {
	secret := func(value Secret, env, key string) ([]byte, error) {
		s := string(value)
		if env != "" {
			s = os.Getenv(env)
			if s == "" {
				return nil, fmt.Errorf("%s_env: environment variable %s is empty or unset", key, env)
			}
		}
		if len(s) < minSecretBytes {
			return nil, fmt.Errorf("%s must be at least %d bytes (got %d)", key, minSecretBytes, len(s))
		}
		return []byte(s), nil
	}
	switch o.Mode {
	case ModeSigned:
		key, err := secret(o.Secret, o.SecretEnv, "secret")
		if err != nil {
			return nil, err
		}
		return &signedVerifier{cookie: o.Cookie, secret: key}, nil
	case ModeJWT:
		v := &jwtVerifier{param: o.TokenParam, cookie: o.Cookie, claim: o.JWTClaim, roomsClaim: o.RoomsClaim}
		method := "HS256"
		if o.JWTPublicKeyFile != "" {
			pemBytes, err := os.ReadFile(o.JWTPublicKeyFile)
			if err != nil {
				return nil, fmt.Errorf("jwt_public_key_file: %w", err)
			}
			pub, err := jwt.ParseRSAPublicKeyFromPEM(pemBytes)
			if err != nil {
				return nil, fmt.Errorf("jwt_public_key_file %s: %w", o.JWTPublicKeyFile, err)
			}
			v.key, method = (*rsa.PublicKey)(pub), "RS256"
		} else {
			key, err := secret(o.JWTKey, o.JWTKeyEnv, "jwt_key")
			if err != nil {
				return nil, err
			}
			v.key = key
		}
		popts := []jwt.ParserOption{
			jwt.WithValidMethods([]string{method}),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(o.JWTLeeway),
		}
		if o.JWTAudience != "" {
			popts = append(popts, jwt.WithAudience(o.JWTAudience))
		}
		if o.JWTIssuer != "" {
			popts = append(popts, jwt.WithIssuer(o.JWTIssuer))
		}
		v.parser = jwt.NewParser(popts...)
		return v, nil
	}
	return nil, nil
}

// Admit implements pipeline.Gatekeeper: s's credential is valid and, with
// rooms_claim, lists s's room; the name is the one a join would take.
// Nothing is remembered.
func (u *Username) Admit(s pipeline.Sender) (string, error) {
	if u.verifier == nil {
		return "", nil
	}
	p, err := u.verifier.verify(s)
	if err == nil && u.opts.RoomsClaim != "" && !p.allows(s.Room()) {
		return "", pipeline.Reject(pipeline.CodeRejected, "this identity may not join room %q", s.Room())
	}
	if err != nil {
		return "", refusal(err, u.opts.Mode)
	}
	name := CleanName(p.name, u.opts.MaxLength)
	if name == "" {
		return "", refusal(errors.New("the name is empty"), u.opts.Mode)
	}
	return name, nil
}

// refusal is what a failed verification tells the sender.
func refusal(err error, mode string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNoCredential):
		return pipeline.Reject(pipeline.CodeRejected, "sign in first: this room needs a signed identity (%s)", mode)
	}
	return pipeline.Reject(pipeline.CodeRejected, "identity refused: %v", err)
}

// proven returns the name ev's sender has proven, verifying it now if no
// earlier step did. It rejects the event when the proof is missing or bad.
func (u *Username) proven(ev *pipeline.Event) (string, error) {
	if name, ok := ev.Sender.Value(verifiedKey{}).(string); ok {
		return name, nil
	}
	p, err := u.verifier.verify(ev.Sender)
	if err == nil && u.opts.RoomsClaim != "" && !p.allows(ev.Sender.Room()) {
		return "", pipeline.Reject(pipeline.CodeRejected, "this identity may not join room %q", ev.Sender.Room())
	}
	if err == nil {
		if name := CleanName(p.name, u.opts.MaxLength); name != "" {
			ev.Sender.SetValue(verifiedKey{}, name)
			if ev.Kind == pipeline.Join {
				ev.ExpiresAt = p.expires
			}
			return name, nil
		}
		err = errors.New("the name is empty")
	}
	return "", refusal(err, u.opts.Mode)
}

// compile-time check that Secret stays a JSON marshaler.
var _ json.Marshaler = Secret("")
