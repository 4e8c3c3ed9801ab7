//go:build linux && amd64

package crcore

// cleanup is a list of undo steps that run, last first, unless the
// operation succeeds and calls release.
type cleanup struct {
	fns []func()
}

func (c *cleanup) add(f func()) { c.fns = append(c.fns, f) }

// run undoes everything registered, newest first.
func (c *cleanup) run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

func (c *cleanup) release() { c.fns = nil }
