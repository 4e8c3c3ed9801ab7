//go:build linux && amd64

package crcore

import "fmt"

func badImagef(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrBadImage)
}

func notSupportedf(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrNotSupported)
}
