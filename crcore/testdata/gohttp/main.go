// gohttp: a tiny Go HTTP server for the real-program tests.
//
// usage: gohttp ADDR
//
// GET /hello answers "hello N" where N counts the requests served; GET
// /blob answers 64 KiB of a fixed pattern. It logs "listening" once its
// socket is bound.
package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
)

func main() {
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var n atomic.Int64
	blob := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	http.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %d", n.Add(1))
	})
	http.HandleFunc("/blob", func(w http.ResponseWriter, r *http.Request) { w.Write(blob) })
	fmt.Println("listening")
	srv := &http.Server{}
	srv.SetKeepAlivesEnabled(false)
	fmt.Fprintln(os.Stderr, srv.Serve(ln))
	os.Exit(1)
}
