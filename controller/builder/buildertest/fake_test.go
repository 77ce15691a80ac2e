package buildertest

import (
	"testing"

	"github.com/hermes-oci/hermes/controller/builder"
)

type fakeEnv struct{ f *Fake }

func (e fakeEnv) Builder() builder.Interface { return e.f }

func (e fakeEnv) AddImage(t *testing.T, repo string, layers int) string {
	ref := "origin.test:5000/" + repo + ":v1"
	if _, err := e.f.AddImage(ref, ImageOptions{Layers: layers}); err != nil {
		t.Fatal(err)
	}
	return ref
}

func (e fakeEnv) SetOriginStatus(status int) { e.f.SetOriginStatus(status) }

// TestFake runs the suite the real builder passes against the Fake.
func TestFake(t *testing.T) {
	Run(t, func(*testing.T) Env { return fakeEnv{NewFake()} })
}
