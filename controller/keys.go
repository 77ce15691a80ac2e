package controller

import (
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/hermes-oci/hermes/controller/builder"
)

// ImageKey is an image as policies want it: a normalized reference, one
// platform, one set of settings.
type ImageKey struct {
	// Image is the normalized reference: docker.io/library/nginx:1.27,
	// registry:5000/app@sha256:….
	Image string
	// Platform is os/arch[/variant], normalized.
	Platform string
	// Settings are the build settings of the policies that want it.
	Settings builder.Settings
}

func (k ImageKey) String() string { return k.Image + " (" + k.Platform + ")" }

// Key is one build: one platform manifest of one repository, one set of
// settings.
type Key struct {
	// Repository is the normalized source repository
	// (docker.io/library/nginx).
	Repository string
	// Manifest is the platform image manifest: the index's subject.
	Manifest digest.Digest
	Platform string
	Settings builder.Settings
}

func (k Key) String() string { return fmt.Sprintf("%s@%s (%s)", k.Repository, k.Manifest, k.Platform) }

// Image is the reference the builder is given for k.
func (k Key) Image() string { return k.Repository + "@" + k.Manifest.String() }
