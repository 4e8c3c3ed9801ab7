//go:build linux

package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// RestoreAnnotation names the image directory to restore a container
// from; a bundle that carries it is restored by crhook's hook.
const RestoreAnnotation = "io.crhook.restore"

// ConfigCheckAnnotation says what the hook does when the bundle's config
// differs from the checkpointed one: "refuse" (the default), "warn" or
// "off".
const ConfigCheckAnnotation = "io.crhook.config-check"

// LoadSpec reads BUNDLE/config.json.
func LoadSpec(bundle string) (*specs.Spec, error) {
	p := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode %s: %w", p, err)
	}
	return &s, nil
}

// ConfigDigest is "sha256:HEX" over the bundle's config with what
// enabling a restore changes left out: the hooks and crhook's own
// annotations. A checkpoint and the bundle it is restored into match when
// their digests are equal. The config is re-encoded from the OCI types
// (fields in declaration order, map keys sorted), so formatting and
// fields the spec does not define do not count.
func ConfigDigest(s *specs.Spec) (string, error) {
	c := *s
	c.Hooks = nil
	if len(s.Annotations) > 0 {
		c.Annotations = map[string]string{}
		for k, v := range s.Annotations {
			if k != RestoreAnnotation && k != ConfigCheckAnnotation {
				c.Annotations[k] = v
			}
		}
		if len(c.Annotations) == 0 {
			c.Annotations = nil
		}
	}
	b, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("encode config: %w", err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// BundleDigest loads BUNDLE/config.json and returns its ConfigDigest.
func BundleDigest(bundle string) (string, error) {
	s, err := LoadSpec(bundle)
	if err != nil {
		return "", err
	}
	return ConfigDigest(s)
}
