package registry

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/auth"
	// The htpasswd access controller registers itself by name; it is the
	// one we use to check passwords.
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
)

// AuthConfig says who may write to and read from the registry.
//
// Writes (POST, PUT, PATCH, DELETE) need a credential: a user from the
// htpasswd file, or the bearer token, sent as "Authorization: Bearer <token>"
// or as the password of HTTP Basic auth (any user name) for clients that
// only speak Basic. A registry without either refuses to start unless
// AnonymousWrites says that anyone may write. Reads are anonymous unless
// RequireRead is set. Both files are re-read when they change, so a rotated
// Kubernetes Secret takes effect without a restart.
type AuthConfig struct {
	// HtpasswdFile is an htpasswd file with bcrypt entries.
	HtpasswdFile string
	// TokenFile holds a bearer token (surrounding white space is ignored).
	TokenFile string
	// RequireRead makes reads need a credential as well.
	RequireRead bool
	// Realm is announced in the Basic challenge; default "hermes-registry".
	Realm string
	// AnonymousWrites lets anyone who reaches the registry push and delete,
	// with no credential configured. It is never a default: New refuses a
	// configuration with neither a credential nor this, and logs a warning
	// when it is set. It contradicts HtpasswdFile, TokenFile and RequireRead.
	AnonymousWrites bool
}

// Enabled reports whether any credential is configured.
func (c AuthConfig) Enabled() bool { return c.HtpasswdFile != "" || c.TokenFile != "" }

// ErrAuthConfig is wrapped by errors about an unusable AuthConfig.
var ErrAuthConfig = errors.New("invalid auth configuration")

// ErrNoWriteCredential is wrapped by the error about a configuration that
// names no write credential and does not allow anonymous writes.
var ErrNoWriteCredential = errors.New("no write credential configured")

// errUnauthenticated is a request without a valid credential.
var errUnauthenticated = errors.New("authentication required")

// verifiedTTL is how long a checked htpasswd credential is remembered.
// bcrypt costs tens of milliseconds per check by design, and one image push
// is dozens of requests.
const verifiedTTL = 30 * time.Second

type authenticator struct {
	cfg      AuthConfig
	htpasswd auth.AccessController // nil without HtpasswdFile
	token    *fileValue            // nil without TokenFile

	mu       sync.Mutex
	verified map[[32]byte]time.Time // sha256(user, password) -> expiry
}

func newAuthenticator(cfg AuthConfig) (*authenticator, error) {
	if cfg.Realm == "" {
		cfg.Realm = "hermes-registry"
	}
	switch {
	case cfg.AnonymousWrites && (cfg.Enabled() || cfg.RequireRead):
		return nil, fmt.Errorf("%w: anonymous writes contradict a configured credential or required read auth; keep one", ErrAuthConfig)
	case cfg.RequireRead && !cfg.Enabled():
		return nil, fmt.Errorf("%w: reads require auth but neither an htpasswd file nor a token file is set", ErrAuthConfig)
	case !cfg.Enabled() && !cfg.AnonymousWrites:
		return nil, fmt.Errorf("%w: %w: set HtpasswdFile or TokenFile, or AnonymousWrites to let anyone write", ErrAuthConfig, ErrNoWriteCredential)
	}
	a := &authenticator{cfg: cfg, verified: map[[32]byte]time.Time{}}
	if cfg.HtpasswdFile != "" {
		// distribution's controller would create a missing file with a
		// random password; a missing Secret must be an error instead.
		if _, err := os.Stat(cfg.HtpasswdFile); err != nil {
			return nil, fmt.Errorf("%w: htpasswd file: %w", ErrAuthConfig, err)
		}
		ac, err := auth.GetAccessController("htpasswd", map[string]any{"realm": cfg.Realm, "path": cfg.HtpasswdFile})
		if err != nil {
			return nil, fmt.Errorf("%w: htpasswd: %w", ErrAuthConfig, err)
		}
		a.htpasswd = ac
	}
	if cfg.TokenFile != "" {
		a.token = &fileValue{path: cfg.TokenFile}
		if tok, err := a.token.get(); err != nil {
			return nil, fmt.Errorf("%w: token file: %w", ErrAuthConfig, err)
		} else if tok == "" {
			return nil, fmt.Errorf("%w: token file %s is empty", ErrAuthConfig, cfg.TokenFile)
		}
	}
	return a, nil
}

// needed reports whether a request must carry a credential.
func (a *authenticator) needed(r *http.Request, rt route) bool {
	if !a.cfg.Enabled() {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		// The base route answers 401 to anonymous clients whatever the
		// read policy: clients (go-containerregistry among them) probe it to
		// learn whether to send credentials, and they must, to push.
		return a.cfg.RequireRead || rt.kind == routeBase
	}
	return true
}

// check returns nil when the request may proceed.
func (a *authenticator) check(r *http.Request, rt route) error {
	if !a.needed(r, rt) {
		return nil
	}
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		if a.tokenMatches(strings.TrimSpace(h[7:])) {
			return nil
		}
		return errUnauthenticated
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return errUnauthenticated
	}
	if a.tokenMatches(pass) {
		return nil
	}
	if a.htpasswd == nil {
		return errUnauthenticated
	}
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	now := time.Now()
	a.mu.Lock()
	exp, ok := a.verified[key]
	a.mu.Unlock()
	if ok && now.Before(exp) {
		return nil
	}
	if _, err := a.htpasswd.Authorized(r); err != nil {
		return errUnauthenticated
	}
	a.mu.Lock()
	if len(a.verified) > 1024 { // bounded: forget everything rather than track age
		clear(a.verified)
	}
	a.verified[key] = now.Add(verifiedTTL)
	a.mu.Unlock()
	return nil
}

func (a *authenticator) tokenMatches(s string) bool {
	if a.token == nil || s == "" {
		return false
	}
	tok, err := a.token.get()
	if err != nil || tok == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(tok), []byte(s)) == 1
}

// challenge sets the header that tells a client how to authenticate.
func (a *authenticator) challenge(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", a.cfg.Realm))
}

// fileValue is the trimmed content of a file, re-read when its modification
// time or size changes.
type fileValue struct {
	path string

	mu    sync.Mutex
	mod   time.Time
	size  int64
	value string
}

func (f *fileValue) get() (string, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fi.ModTime().Equal(f.mod) && fi.Size() == f.size && f.value != "" {
		return f.value, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return "", err
	}
	f.mod, f.size, f.value = fi.ModTime(), fi.Size(), strings.TrimSpace(string(b))
	return f.value, nil
}
