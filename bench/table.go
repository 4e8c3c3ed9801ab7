//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// figure is one column: how to take it from a sample and print it.
type figure struct {
	head string
	get  func(sample) float64
	fmt  func(float64) string
}

func secs(d time.Duration) float64 { return d.Seconds() }

var (
	fmtSecs = func(v float64) string { return fmt.Sprintf("%.3f s", v) }
	fmtMiB  = func(v float64) string { return fmt.Sprintf("%.1f MiB", v) }
)

var figures = []figure{
	{"dump wall", func(s sample) float64 { return secs(s.dumpWall) }, fmtSecs},
	{"frozen", func(s sample) float64 { return secs(s.frozen) }, fmtSecs},
	{"restore wall", func(s sample) float64 { return secs(s.restoreWall) }, fmtSecs},
	{"image", func(s sample) float64 { return float64(s.imageBytes) / (1 << 20) }, fmtMiB},
	{"peak RSS", func(s sample) float64 { return float64(s.rssKiB) / 1024 }, fmtMiB},
}

var phases = []figure{
	{"memory dump", func(s sample) float64 { return secs(s.memDump) }, fmtSecs},
	{"restore (own timer)", func(s sample) float64 { return secs(s.restoreIn) }, fmtSecs},
	{"pages written", func(s sample) float64 { return float64(s.pagesWrote) }, func(v float64) string { return fmt.Sprintf("%.0f", v) }},
}

func median(r *result, f figure) float64 {
	v := make([]float64, len(r.samples))
	for i, s := range r.samples {
		v[i] = f.get(s)
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func renderTable(cfg *config, results []*result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s on %s.\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine())
	fmt.Fprintf(&b, "Medians of %d runs per tool, tools alternated; images on tmpfs; peak RSS is the dumper's or restorer's own (larger of the two).\n", cfg.runs)
	if cfg.criu != "" {
		fmt.Fprintf(&b, "Baseline: %s.\n", criuVersion(cfg.criu))
	}
	b.WriteString("\n")
	writeTable(&b, results, figures, true)
	b.WriteString("\nPhases, from each tool's own stats (CRIU: memdump+memwrite, restore_time):\n\n")
	writeTable(&b, results, phases, false)
	return b.String()
}

func writeTable(b *strings.Builder, results []*result, figs []figure, ratios bool) {
	b.WriteString("| workload | tool |")
	for _, f := range figs {
		fmt.Fprintf(b, " %s |", f.head)
	}
	b.WriteString("\n|---|---|")
	for range figs {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for i := 0; i < len(results); {
		j := i
		for j < len(results) && results[j].w.name == results[i].w.name {
			j++
		}
		group := results[i:j]
		var ch, cr *result
		for k, r := range group {
			label := ""
			if k == 0 {
				label = r.w.label
			}
			fmt.Fprintf(b, "| %s | %s |", label, r.tool)
			if r.note != "" || len(r.samples) == 0 {
				note := r.note
				if note == "" {
					note = "no runs"
				}
				if !ratios && !strings.HasPrefix(note, "error") {
					note = "–"
				}
				fmt.Fprintf(b, " %s |", mdEscape(note))
				for range figs[1:] {
					b.WriteString(" |")
				}
				b.WriteString("\n")
				continue
			}
			for _, f := range figs {
				fmt.Fprintf(b, " %s |", f.fmt(median(r, f)))
			}
			b.WriteString("\n")
			switch r.tool {
			case toolCrhook:
				ch = r
			case toolCRIU:
				cr = r
			}
		}
		if ratios && ch != nil && cr != nil {
			b.WriteString("| | crhook/CRIU |")
			for _, f := range figs {
				den := median(cr, f)
				if den == 0 {
					b.WriteString(" – |")
					continue
				}
				fmt.Fprintf(b, " %.2f |", median(ch, f)/den)
			}
			b.WriteString("\n")
		}
		i = j
	}
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

func machine() string {
	var u unix.Utsname
	kernel := "?"
	if unix.Uname(&u) == nil {
		kernel = unix.ByteSliceToString(u.Release[:])
	}
	model, mem := "?", "?"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.Join(strings.Fields(v), " ")
				break
			}
		}
		f.Close()
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		mem = fmt.Sprintf("%.0f GiB", float64(si.Totalram)*float64(si.Unit)/(1<<30))
	}
	return fmt.Sprintf("Linux %s, %d CPUs (%s), %s RAM", kernel, runtime.NumCPU(), model, mem)
}

func criuVersion(path string) string {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return "CRIU (version unknown)"
	}
	v := strings.TrimSpace(string(bytes.SplitN(out, []byte("\n"), 2)[0]))
	return "CRIU " + strings.TrimPrefix(v, "Version: ")
}
