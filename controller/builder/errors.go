package builder

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Errors a build can end with. Every error Build returns wraps at most one of
// these kinds (and, for registry errors, the registry's own error), so callers
// decide with errors.Is.
var (
	// ErrInvalidRequest: the request itself is wrong (bad reference, bad
	// setting). Retrying does not help.
	ErrInvalidRequest = errors.New("invalid build request")
	// ErrUnauthorized: a registry refused the credentials (401/403), or none
	// were given where they are needed.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotFound: the image, a platform manifest or a blob does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnsupportedMediaType: the reference names something that is not an
	// image manifest or image index Hermes can index.
	ErrUnsupportedMediaType = errors.New("unsupported media type")
	// ErrCacheWriteRefused: the cache registry rejected a write (4xx).
	ErrCacheWriteRefused = errors.New("cache registry write refused")
	// ErrUnavailable: a registry could not be reached or failed (network
	// error, 5xx). Retrying later may help.
	ErrUnavailable = errors.New("registry unavailable")
	// ErrDigestMismatch: a blob's content does not match its descriptor.
	ErrDigestMismatch = errors.New("content does not match its digest")
	// ErrInvalidLayer: a layer could not be read as the tar archive its
	// media type promises.
	ErrInvalidLayer = errors.New("invalid layer")
	// ErrCancelled: the context ended before the build finished.
	ErrCancelled = errors.New("build cancelled")
)

// side says which registry a request went to; it decides how a refusal is
// reported.
type side int

const (
	origin side = iota
	cacheRead
	cacheWrite
)

// classify wraps a registry client error with the kind it belongs to, keeping
// the original error in the chain. ctx decides whether a failure was really a
// cancellation.
func classify(ctx context.Context, s side, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrCancelled, err)
	}
	for _, kind := range []error{ErrCancelled, ErrUnauthorized, ErrNotFound, ErrCacheWriteRefused,
		ErrUnavailable, ErrDigestMismatch, ErrUnsupportedMediaType, ErrInvalidLayer, ErrInvalidRequest} {
		if errors.Is(err, kind) {
			return err
		}
	}
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) {
		switch {
		case s == cacheWrite && blobVanished(resp):
			// The cache's garbage collector removed a blob this build had
			// found there (or an upload session it had started) before the
			// manifest naming it arrived: pushing again uploads it anew.
			return fmt.Errorf("%w: the cache registry no longer has a blob this push relies on (garbage collected meanwhile): %w", ErrUnavailable, err)
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			if s == cacheWrite {
				return fmt.Errorf("%w: %w: %w", ErrCacheWriteRefused, ErrUnauthorized, err)
			}
			return fmt.Errorf("%w: %w", ErrUnauthorized, err)
		case resp.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		case s == cacheWrite && resp.StatusCode >= 400:
			return fmt.Errorf("%w: %w", ErrCacheWriteRefused, err)
		}
		return err
	}
	if errors.Is(err, auth.ErrBasicCredentialNotFound) {
		// oras-go ends here when the registry challenges (401) and no
		// credential is configured for it.
		if s == cacheWrite {
			return fmt.Errorf("%w: %w: 401 and no credential for the cache registry: %w", ErrCacheWriteRefused, ErrUnauthorized, err)
		}
		return fmt.Errorf("%w: 401 and no credential for this registry: %w", ErrUnauthorized, err)
	}
	if errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// blobVanished reports whether a cache write failed because a blob or upload
// it relied on is gone.
func blobVanished(resp *errcode.ErrorResponse) bool {
	for _, e := range resp.Errors {
		switch e.Code {
		case "MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "BLOB_UPLOAD_UNKNOWN":
			return true
		}
	}
	return false
}

// Retryable reports whether a build that failed with err may succeed if
// tried again later without any change: a registry that was unreachable,
// slow, overloaded or failing (timeouts, connection resets, 5xx, 429), a
// build cut short (cancelled, deadline), a full temp disk. Refusals (401,
// 403), missing images (404), content Hermes cannot index and invalid
// requests are terminal: only a change of the request (its credentials,
// settings or image) can make them succeed. Unknown errors count as
// retryable, so nothing is given up on by mistake; callers back off.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	for _, terminal := range []error{ErrUnauthorized, ErrNotFound, ErrUnsupportedMediaType, ErrInvalidRequest,
		ErrInvalidLayer, ErrDigestMismatch, ErrCacheWriteRefused} {
		if errors.Is(err, terminal) {
			// A cache that refuses a write with 5xx or 429 is unavailable
			// (classify says ErrUnavailable then), not refused.
			return false
		}
	}
	return true
}
