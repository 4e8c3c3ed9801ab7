//go:build linux && amd64

package crcore

import (
	"errors"
	"fmt"
)

func badImagef(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrBadImage)
}

func notSupportedf(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrNotSupported)
}

func isNotSupported(err error) bool { return errors.Is(err, ErrNotSupported) }
