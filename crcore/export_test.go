//go:build linux

package crcore

// SetUserfaultMin sets the bytes of fresh anonymous memory from which a
// restore fills a task through a userfaultfd (0: every task with any),
// until the returned function puts the default back.
func SetUserfaultMin(n uint64) (restore func()) {
	old := userfaultMin
	userfaultMin = n
	return func() { userfaultMin = old }
}
