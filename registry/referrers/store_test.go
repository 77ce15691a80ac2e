package referrers_test

import (
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"

	"github.com/hermes-oci/hermes/registry/referrers"
	"github.com/hermes-oci/hermes/registry/referrers/storetest"
)

func TestMemory(t *testing.T) {
	storetest.Run(t, func(*testing.T) referrers.Store { return referrers.NewMemory() })
}

func TestDriverInMemory(t *testing.T) {
	storetest.Run(t, func(*testing.T) referrers.Store { return referrers.NewDriver(inmemory.New()) })
}

func TestDriverFilesystem(t *testing.T) {
	storetest.Run(t, func(t *testing.T) referrers.Store {
		d := filesystem.New(filesystem.DriverParameters{RootDirectory: t.TempDir(), MaxThreads: 25})
		return referrers.NewDriver(d)
	})
}

func TestCache(t *testing.T) {
	storetest.Run(t, func(*testing.T) referrers.Store {
		return referrers.NewCache(referrers.NewDriver(inmemory.New()), referrers.CacheOptions{})
	})
}
