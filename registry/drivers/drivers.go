// Package drivers registers distribution's storage drivers (filesystem,
// inmemory, s3, gcs, azure) with its driver factory, so that a
// registry.Config can name any of them. Binaries import it for that side
// effect; the registry package itself registers none, leaving the choice
// (and the SDKs it pulls in) to main.
package drivers

import (
	_ "github.com/distribution/distribution/v3/registry/storage/driver/azure"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/gcs"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)
