// Package build holds the end-to-end tests of the SOCI index builder
// (controller/builder and `hermes build`) against real registries: distribution
// as the origin, the Hermes cache registry, and soci-snapshotter's own
// IndexBuilder as the reference for the format.
package build
