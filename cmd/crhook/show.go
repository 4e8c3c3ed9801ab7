package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/crhook/crhook/crcore"
)

func showCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show DIR|FILE",
		Short: "Print a checkpoint's fd tables, or its images as JSON",
		Long: `show DIR prints each process's fd table with the file behind every fd,
one line per fd, as "PID: FD TYPE DESCRIPTION" (like crit x DIR fds):

  1234: 3 REG /tmp/x pos=10 flags=O_RDWR
  1234: 4 UNIXSK stream ino=5678 peer=5679

show --json DIR prints every image of the directory as JSON instead, one
object per image file {file, magic, entries}. show FILE prints that one
image as JSON.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fi, err := os.Stat(args[0])
			if err != nil {
				return err
			}
			if fi.IsDir() && !asJSON {
				return showFds(args[0])
			}
			return show(args[0])
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the images as JSON")
	return c
}

func showFds(dir string) error {
	lines, err := crcore.FdTable(dir)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	return w.Flush()
}

type shownImage struct {
	File    string            `json:"file"`
	Magic   string            `json:"magic"`
	Entries []json.RawMessage `json:"entries"`
}

func show(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	var files []string
	if fi.IsDir() {
		ents, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".img") && !strings.HasPrefix(e.Name(), "pages-") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		sort.Strings(files)
	} else {
		files = []string{path}
	}
	var out []shownImage
	for _, f := range files {
		kind, msgs, err := crcore.DecodeImage(f)
		if err != nil {
			return err
		}
		si := shownImage{File: filepath.Base(f), Magic: kind}
		for _, m := range msgs {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			si.Entries = append(si.Entries, b)
		}
		out = append(out, si)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if fi.IsDir() {
		return enc.Encode(out)
	}
	return enc.Encode(out[0])
}

var _ proto.Message
