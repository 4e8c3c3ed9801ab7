//go:build linux

package runtime

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestLockSerializesCheckpoints: a second checkpoint of the same
// container waits for the first, and fails clearly when it cannot get the
// lock in time; another container is not held up.
func TestLockSerializesCheckpoints(t *testing.T) {
	old := LockDir
	LockDir = t.TempDir()
	t.Cleanup(func() { LockDir = old })

	unlock, err := Lock(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err = Lock(ctx, "c1")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "held by another crhook") {
		t.Fatalf("second lock: %v", err)
	}
	other, err := Lock(context.Background(), "c2")
	if err != nil {
		t.Fatalf("another container: %v", err)
	}
	other()

	got := make(chan error, 1)
	go func() {
		u, err := Lock(context.Background(), "c1")
		if err == nil {
			u()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("second lock did not wait: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second lock still waiting after the first was released")
	}
}
