// Package memmeta keeps the file tree of a lazily mounted layer in memory,
// as a soci metadata.Store.
//
// soci builds a bbolt database of every layer's file tree when it mounts
// the layer: one bucket per file. For a layer of tens of thousands of files
// that takes seconds, and containerd prepares an image's layers one after
// another, so the mounts of a large image add up to most of its start time.
// The same tree held in Go memory is built in milliseconds.
//
// Memory is bounded by a node-wide budget counted in tree entries (files,
// directories, links): a layer whose entries do not fit goes to the fallback
// store (soci's bbolt), and a layer's entries return to the budget when soci
// closes it (the layer is unmounted).
//
// The tree answers exactly as soci's bbolt reader does for the same TOC,
// including how it counts directory links and how it treats a repeated
// directory entry; tests compare the two entry by entry.
package memmeta
