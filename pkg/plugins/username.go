package plugins

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	pipeline.Register(pipeline.NewSpec("username",
		"resolves the display name from a base64 cookie, a rename or a guest name, or proves it (HMAC-signed cookie or JWT); trims, strips control characters, bounds length",
		DefaultUsernameOptions,
		func(o *UsernameOptions, _ pipeline.Deps) (pipeline.Plugin, error) { return NewUsername(*o) }))
}

// UsernameOptions configure the username plugin.
type UsernameOptions struct {
	// Cookie is the handshake cookie holding the base64 (standard or URL
	// alphabet, padded or not) of the UTF-8 name, as the seed set it. An absent
	// or undecodable cookie gives the guest name. Empty disables cookies.
	// Default "username".
	Cookie string `mapstructure:"cookie"`
	// GuestFormat is a fmt format given the client id, for members who have no
	// name yet. Default "游客%d" (the seed's "guest N").
	GuestFormat string `mapstructure:"guest_format"`
	// AllowRename lets a message's `username` field rename its sender, as the
	// seed did. When false the field is ignored. Default false.
	AllowRename bool `mapstructure:"allow_rename"`
	// MaxLength bounds names, in runes (characters, not bytes, so CJK names get
	// the same room as Latin ones). Default 32.
	MaxLength int `mapstructure:"max_length"`

	// Mode is where names come from: "plain" (the default: the cookie,
	// renames, guest names — the client is trusted), "signed" (the Cookie
	// holds a name signed with HMAC-SHA256, see SignUsername) or "jwt" (a JSON
	// Web Token from ?TokenParam= or the Cookie). In signed and jwt modes a
	// connection without a valid proof is refused (at join: an error frame and
	// close 1008), guests are not admitted, and the message's `username` is
	// ignored: nobody can take another's name.
	Mode string `mapstructure:"mode"`
	// Secret is the HMAC key of mode signed, at least 32 bytes. Prefer
	// SecretEnv, which keeps it out of files. Default empty.
	Secret Secret `mapstructure:"secret"`
	// SecretEnv names the environment variable holding Secret. Default empty.
	SecretEnv string `mapstructure:"secret_env"`
	// JWTKey is the HS256 key of mode jwt, at least 32 bytes. Default empty.
	JWTKey Secret `mapstructure:"jwt_key"`
	// JWTKeyEnv names the environment variable holding JWTKey. Default empty.
	JWTKeyEnv string `mapstructure:"jwt_key_env"`
	// JWTPublicKeyFile is a PEM RSA public key: tokens must then be RS256.
	// Default empty.
	JWTPublicKeyFile string `mapstructure:"jwt_public_key_file"`
	// JWTClaim is the claim holding the display name. Default "name".
	JWTClaim string `mapstructure:"jwt_claim"`
	// JWTAudience, when set, must be in the token's aud. Default empty.
	JWTAudience string `mapstructure:"jwt_audience"`
	// JWTIssuer, when set, must equal the token's iss. Default empty.
	JWTIssuer string `mapstructure:"jwt_issuer"`
	// JWTLeeway tolerates clock skew on exp, nbf and iat. Tokens without
	// exp are refused. Default 0.
	JWTLeeway time.Duration `mapstructure:"jwt_leeway"`
	// TokenParam is the handshake query parameter carrying the JWT (tried
	// before the cookie). Empty: cookie only. Default "token".
	TokenParam string `mapstructure:"token_param"`
	// RoomsClaim (mode jwt) names a claim listing the rooms the token may
	// join: exact names, or prefixes ending in "*" ("team-*"); a single
	// string is one room. A token without the claim, or a room it does not
	// list, is refused like a missing proof. Empty (the default): any room.
	RoomsClaim string `mapstructure:"rooms_claim"`
}

// DefaultUsernameOptions returns the options a step without `with:` gets.
func DefaultUsernameOptions() *UsernameOptions {
	return &UsernameOptions{Cookie: "username", GuestFormat: "游客%d", MaxLength: 32,
		Mode: ModePlain, JWTClaim: "name", TokenParam: "token"}
}

// Validate rejects options that would produce broken names at run time rather
// than at load time.
func (o *UsernameOptions) Validate() error {
	if o.MaxLength < 1 {
		return fmt.Errorf("max_length must be at least 1, got %d", o.MaxLength)
	}
	if o.GuestFormat == "" {
		return errors.New("guest_format must not be empty")
	}
	// A format without exactly one integer verb renders "%!…" noise into
	// every guest's name; catch it here.
	if g := fmt.Sprintf(o.GuestFormat, int64(1)); strings.Contains(g, "%!") {
		return fmt.Errorf("guest_format %q must take exactly one integer (the client id), like %q", o.GuestFormat, "guest%d")
	}
	return o.validateIdentity()
}

// Username is the username plugin. Names are cleaned the same way whatever
// their source, so a name seen by other members is never longer than
// MaxLength, never empty, and never contains control or bidi-override
// characters that could spoof the names or bodies around it.
type Username struct {
	opts     UsernameOptions
	verifier verifier // nil in plain mode
}

// NewUsername returns a username plugin. It validates opts.
func NewUsername(opts UsernameOptions) (*Username, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	v, err := newVerifier(&opts)
	if err != nil {
		return nil, err
	}
	return &Username{opts: opts, verifier: v}, nil
}

// GuardsJoin implements pipeline.Gatekeeper: in signed and jwt modes only
// members who prove their name get in, so the server shows nothing of the
// room before the join is accepted.
func (u *Username) GuardsJoin() bool { return u.verifier != nil }

// Wrap implements pipeline.Plugin.
func (u *Username) Wrap(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
		if ev.Sender == nil {
			return errors.New("username: event has no sender")
		}
		name, proven := ev.Sender.Value(verifiedKey{}).(string)
		switch {
		case pipeline.IsTrusted(ev.Sender):
			// The server API's caller names itself: trusted, but cleaned
			// like every name (no control or bidi characters, bounded).
			if name = CleanName(ev.Sender.Username(), u.opts.MaxLength); name == "" {
				return pipeline.Reject(pipeline.CodeInvalidJSON, "username is empty once cleaned")
			}
		case proven:
			// A name proven at join stays, whatever this step's mode.
		case u.verifier != nil:
			var err error
			if name, err = u.proven(ev); err != nil {
				return err
			}
		default:
			name = u.resolve(ev)
		}
		if ev.Sender.Username() != name {
			ev.Sender.SetUsername(name)
		}
		ev.Envelope.Username = name
		return next.Handle(ctx, ev)
	})
}

// resolve picks the name for ev. Join starts from the cookie (a new
// connection has no name yet); messages keep the current name unless a
// permitted rename asks otherwise; leave keeps the name members knew.
func (u *Username) resolve(ev *pipeline.Event) string {
	current := ev.Sender.Username()
	switch ev.Kind {
	case pipeline.Join:
		return u.initial(ev.Sender)
	case pipeline.Message:
		if u.opts.AllowRename && ev.In.Username != nil {
			// An empty or reserved name is ignored: the sender keeps theirs.
			if name := CleanName(*ev.In.Username, u.opts.MaxLength); name != "" && !ReservedName(name) {
				return name
			}
		}
	}
	if current != "" {
		return current
	}
	return u.initial(ev.Sender)
}

// initial is the name of a member who has none yet: the cookie's, else a guest name.
func (u *Username) initial(s pipeline.Sender) string {
	if u.opts.Cookie != "" {
		if raw, ok := s.Cookie(u.opts.Cookie); ok {
			if b, ok := decodeBase64(raw); ok {
				if name := CleanName(string(b), u.opts.MaxLength); name != "" && !ReservedName(name) {
					return name
				}
			}
		}
	}
	return CleanName(fmt.Sprintf(u.opts.GuestFormat, s.ID()), u.opts.MaxLength)
}

// ReservedName reports whether name (already cleaned, see CleanName) is one
// members cannot take: SystemName, the name of the server's replies, in any
// case. Plain mode refuses it for renames (`username`, /nick) and cookies.
func ReservedName(name string) bool {
	return strings.EqualFold(name, SystemName)
}

// decodeBase64 decodes a cookie value in any of the base64 forms browsers and
// server frameworks produce: standard or URL-safe alphabet, with or without
// padding, optionally double-quoted (RFC 6265) or percent-encoded (JavaScript's
// encodeURIComponent turns "=" into "%3D").
func decodeBase64(s string) ([]byte, bool) {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	if strings.Contains(s, "%") {
		u, err := url.QueryUnescape(s)
		if err != nil {
			return nil, false
		}
		s = u
	}
	s = strings.TrimRight(s, "=")
	if s == "" {
		return nil, false
	}
	enc := base64.RawStdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.RawURLEncoding
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		return nil, false
	}
	return b, true
}

// CleanName makes s fit to show as a name, as the username plugin does:
// valid UTF-8, no control or bidi override characters, no surrounding white
// space, at most max runes. It returns "" when nothing is left. Plugins that
// set names (commands' /nick, custom ones) use it so every name is equally safe.
func CleanName(s string, max int) string {
	s = strings.ToValidUTF8(s, "")
	if strings.IndexFunc(s, isNameJunk) >= 0 {
		s = strings.Map(func(r rune) rune {
			if isNameJunk(r) {
				return -1
			}
			return r
		}, s)
	}
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > max {
		n := 0
		for i := range s {
			if n == max {
				s = s[:i]
				break
			}
			n++
		}
		// Cutting may leave white space at the new end.
		s = strings.TrimSpace(s)
	}
	return s
}

// isNameJunk reports the runes a name must not carry: control characters and
// the bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069),
// which can make a name reorder the text around it.
func isNameJunk(r rune) bool {
	return unicode.IsControl(r) || (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069)
}

var (
	_ pipeline.Plugin     = (*Username)(nil)
	_ pipeline.Gatekeeper = (*Username)(nil)
)
