//go:build tools

// This file pins the libraries the runtime code is built on before every one
// of them has an importer, so that `go mod tidy` keeps them at the versions
// verified together. Remove entries as real imports appear.
package hermes

import (
	_ "github.com/awslabs/soci-snapshotter/fs"
	_ "github.com/awslabs/soci-snapshotter/service"
	_ "github.com/awslabs/soci-snapshotter/soci"
	_ "github.com/awslabs/soci-snapshotter/ztoc"
	_ "github.com/containerd/containerd/v2/contrib/snapshotservice"
	_ "github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/reference"
	_ "github.com/go-logr/logr"
	_ "github.com/google/go-containerregistry/pkg/v1/remote"
	_ "github.com/pelletier/go-toml/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "oras.land/oras-go/v2/registry/remote"
)
