// Package kabi holds the kernel ABI that golang.org/x/sys/unix lacks:
// structures and constants, one file per kernel header, each citing it.
// Sizes are checked by tests, because a wrong layout passed to the kernel
// fails silently or corrupts the target.
//
//go:build linux && amd64

package kabi
