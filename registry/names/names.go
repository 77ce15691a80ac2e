package names

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/distribution/reference"
)

const (
	// DockerHub is the canonical host of Docker Hub in cache repositories.
	DockerHub = "docker.io"

	// MaxRepositoryLength is the longest repository name the cache accepts,
	// the distribution spec's limit.
	MaxRepositoryLength = reference.RepositoryNameTotalLengthMax
)

var (
	// ErrInvalidName is wrapped by every error about a repository or mirror
	// name that cannot be mapped into the cache.
	ErrInvalidName = errors.New("invalid repository name")
	// ErrInvalidReference is wrapped by ParseReference errors.
	ErrInvalidReference = errors.New("invalid image reference")
)

// NameError says why a name was rejected. errors.Is(err, ErrInvalidName)
// holds for every NameError.
type NameError struct {
	Name   string // the name as given
	Reason string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("%v %q: %s", ErrInvalidName, e.Name, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalidName) work.
func (e *NameError) Unwrap() error { return ErrInvalidName }

// dockerHubAliases are hosts that name Docker Hub besides DockerHub itself.
var dockerHubAliases = map[string]bool{
	"index.docker.io":      true,
	"registry-1.docker.io": true,
}

var (
	anchoredDomain = regexp.MustCompile(`^` + reference.DomainRegexp.String() + `$`)
	// pathComponent is the distribution spec's repository path component.
	pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
)

// ParseReference normalizes an image string as users and Pods write it into
// a fully qualified reference: "nginx" becomes docker.io/library/nginx:latest,
// a reference with neither tag nor digest gets ":latest", and Docker Hub's
// alias hosts fold into docker.io. A reference with both a tag and a digest
// keeps both; the digest is what identifies the image.
func ParseReference(s string) (reference.Named, error) {
	if host, rest, ok := strings.Cut(s, "/"); ok && dockerHubAliases[strings.ToLower(host)] {
		s = DockerHub + "/" + rest
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrInvalidReference, s, err)
	}
	return reference.TagNameOnly(named), nil
}

// Repository returns the cache repository that holds artifacts for named's
// source repository, host included (see the package documentation for the
// host mapping). Tag and digest are ignored. The host adds to the path's
// length, so a source path near the 255-character limit can give a
// repository beyond it, which the registry then refuses as NAME_INVALID;
// CacheReference reports that case as an error.
func Repository(named reference.Named) string {
	host, path := reference.Domain(named), reference.Path(named)
	comp, err := hostComponent(host)
	if err != nil {
		// reference's grammar admits a few hosts netip does not (IPv6 with
		// odd groupings); they still map deterministically, by their
		// lower-case hex and colon digits.
		comp = "ip6__" + strings.NewReplacer(":", "", "[", "", "]", "").Replace(strings.ToLower(host))
	}
	return join(comp, path)
}

// FromMirror returns the cache repository for a request path name (the
// <name> of /v2/<name>/...) and the ns query parameter containerd adds to
// mirror requests. With ns, name is a repository on host ns
// ("library/nginx", "docker.io" -> "docker.io/library/nginx"); without, name
// already is the cache repository and is only validated, with Docker Hub's
// alias hosts folded as Repository does. Every rejection is a *NameError.
func FromMirror(name, ns string) (string, error) {
	if err := checkPath(name); err != nil {
		return "", err
	}
	var repo string
	if ns == "" {
		first, rest, _ := strings.Cut(name, "/")
		if dockerHubAliases[first] {
			first = DockerHub
		}
		repo = join(first, rest)
		if rest == "" {
			repo = first
		}
	} else {
		comp, err := hostComponent(ns)
		if err != nil {
			return "", err
		}
		repo = join(comp, name)
	}
	if len(repo) > MaxRepositoryLength {
		return "", &NameError{Name: name, Reason: fmt.Sprintf("cache repository %q is longer than %d characters", repo, MaxRepositoryLength)}
	}
	return repo, nil
}

// CacheReference returns ref as stored in the cache registry at cacheHost
// (host[:port]): the cache repository under that host, with ref's tag and
// digest kept.
func CacheReference(cacheHost string, ref reference.Named) (reference.Named, error) {
	named, err := reference.WithName(cacheHost + "/" + Repository(ref))
	if err != nil {
		return nil, &NameError{Name: ref.String(), Reason: err.Error()}
	}
	if t, ok := ref.(reference.Tagged); ok {
		if named, err = reference.WithTag(named, t.Tag()); err != nil {
			return nil, &NameError{Name: ref.String(), Reason: err.Error()}
		}
	}
	if d, ok := ref.(reference.Digested); ok {
		if named, err = reference.WithDigest(named, d.Digest()); err != nil {
			return nil, &NameError{Name: ref.String(), Reason: err.Error()}
		}
	}
	return named, nil
}

// join puts the host component before path, adding Docker Hub's "library/"
// for single-component paths.
func join(host, path string) string {
	if host == DockerHub && path != "" && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	if path == "" {
		return host
	}
	return host + "/" + path
}

// hostComponent maps a registry host (with optional port) to the first
// component of a cache repository.
func hostComponent(host string) (string, error) {
	if host == "" {
		return "", &NameError{Name: host, Reason: "empty registry host"}
	}
	if !anchoredDomain.MatchString(host) {
		return "", &NameError{Name: host, Reason: "not a registry host[:port]"}
	}
	h, port := host, ""
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		h, port = h[1:end], strings.TrimPrefix(h[end+1:], ":")
		addr, err := netip.ParseAddr(h)
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return "", &NameError{Name: host, Reason: "not an IPv6 address"}
		}
		b := addr.As16()
		h = "ip6__" + hex.EncodeToString(b[:])
	} else {
		if i := strings.LastIndexByte(h, ':'); i >= 0 {
			h, port = h[:i], h[i+1:]
		}
		h = strings.ToLower(h)
		if dockerHubAliases[h] && port == "" {
			h = DockerHub
		}
	}
	if port != "" {
		h += "_" + port
	}
	return h, nil
}

// checkPath validates a repository path as given in a request, with reasons
// a person can act on.
func checkPath(name string) error {
	switch {
	case name == "":
		return &NameError{Name: name, Reason: "empty"}
	case len(name) > MaxRepositoryLength:
		return &NameError{Name: name, Reason: fmt.Sprintf("longer than %d characters", MaxRepositoryLength)}
	case strings.Contains(name, ".."):
		return &NameError{Name: name, Reason: `contains ".."`}
	case strings.ToLower(name) != name:
		return &NameError{Name: name, Reason: "must be lower case"}
	}
	for _, c := range strings.Split(name, "/") {
		if c == "" {
			return &NameError{Name: name, Reason: "empty path component"}
		}
		if !pathComponent.MatchString(c) {
			return &NameError{Name: name, Reason: fmt.Sprintf("path component %q is not [a-z0-9] separated by '.', '_', '__' or '-'", c)}
		}
	}
	return nil
}
