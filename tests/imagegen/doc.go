// Package imagegentest checks tools/imagegen against a real registry and
// the real crane CLI: what imagegen pushes is what clients pull, and
// imagegen.Tree agrees with crane's own flattening of the layers.
package imagegentest
