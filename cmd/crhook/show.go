package main

import (
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

func showCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show FILE|DIR",
		Short: "Print images as JSON (a directory: every image in it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return show(args[0])
		},
	}
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
