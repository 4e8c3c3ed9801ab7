// Package pb holds the protobuf messages of crhook's checkpoint images.
//
// The messages named after CRIU's (inventory_entry, core_entry,
// mm_entry, fdinfo_entry, ...) keep CRIU's field numbers, types and
// required/optional labels, so CRIU's tools (go-criu's crit,
// checkpointctl) decode crhook images; fields crhook never writes are left
// out where CRIU marks them optional or repeated, and survive a round trip
// as unknown fields. State CRIU lacks lives in crhook's own messages
// (crhook.proto), stored in image kinds with their own magic numbers.
//
// The .proto files are registered under "proto/<name>.proto" (paths
// relative to the module root) so they never clash with go-criu's
// registrations of "<name>.proto" in the same binary.
//
// The *.pb.go files are generated; run generate.sh (make generate) after
// editing a .proto file.
package pb

//go:generate bash generate.sh
