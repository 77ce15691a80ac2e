// Package registry tests hermes-registry as a real process with the real
// clients that talk to it (oras, crane, the OCI conformance suite,
// go-containerregistry and oras-go).
package registry
