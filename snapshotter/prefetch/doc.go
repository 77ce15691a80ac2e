// Package prefetch plans what a node fetches of an image's layers at mount
// time from a learned profile (package registry/profile): the spans the
// profile names, and the spans holding the pages it names, turned into
// compressed byte ranges of the layer blobs, adjacent and near spans merged
// into one range request, ordered by first use and bounded in bytes.
//
// Plan is a pure function of the profile, the layers' span tables (from
// their zTOCs: soci's zinfo StartCompressedOffset/EndCompressedOffset and
// StartUncompressedOffset/EndUncompressedOffset per span, read by the
// caller, since soci's zinfo needs cgo and this package does not) and
// Options. Fetching, pacing to a bandwidth and handing the bytes to soci's
// span manager are the caller's.
package prefetch
