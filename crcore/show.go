//go:build linux && amd64

package crcore

import (
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore/internal/image"
)

// DecodeImage reads one image file whatever its kind, for display: it
// returns the kind's name (CRIU's, e.g. "CORE") and every entry.
func DecodeImage(path string) (string, []proto.Message, error) {
	k, msgs, err := image.Decode(path)
	return k.Name, msgs, err
}
