package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crhook/crhook/crcore"
)

// startProgress shows on w, when w is a terminal, how many bytes of
// memory a dump or restore has moved and at what rate, once it has run
// for `after` (negative: never), refreshed four times a second. The
// returned stop ends the display with a final line.
func startProgress(verb string, w *os.File, after time.Duration) (*crcore.Progress, func()) {
	p := &crcore.Progress{}
	if after < 0 {
		return p, func() {}
	}
	if _, err := unix.IoctlGetTermios(int(w.Fd()), unix.TCGETS); err != nil {
		return p, func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		shown := false
		t := time.NewTimer(after)
		defer t.Stop()
		for {
			select {
			case <-quit:
				if shown {
					showProgress(w, verb, p, time.Since(start))
					fmt.Fprintln(w)
				}
				return
			case <-t.C:
				showProgress(w, verb, p, time.Since(start))
				shown = true
				t.Reset(250 * time.Millisecond)
			}
		}
	}()
	return p, func() { close(quit); <-done }
}

func showProgress(w io.Writer, verb string, p *crcore.Progress, took time.Duration) {
	done, total := p.Done.Load(), p.Total.Load()
	rate := float64(done) / took.Seconds()
	line := fmt.Sprintf("crhook: %s: %s", verb, mib(done))
	if total > 0 {
		line += fmt.Sprintf(" of %s (%d%%)", mib(total), done*100/total)
	}
	line += fmt.Sprintf(", %s/s", mib(uint64(rate)))
	fmt.Fprintf(w, "\r%s\x1b[K", line)
}

func mib(n uint64) string {
	if n >= 10<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
