#!/usr/bin/env bash
# Regenerates proto/*.pb.go from proto/*.proto.
#
# Usage: proto/generate.sh [OUTDIR]
#   OUTDIR defaults to the module root; the files land in OUTDIR/proto/.
#
# Needs protoc (Debian: protobuf-compiler) and protoc-gen-go at exactly the
# version below (go install google.golang.org/protobuf/cmd/protoc-gen-go@VERSION
# puts it in $(go env GOPATH)/bin, which is searched after PATH). The
# output depends only on the inputs and these two versions, so a re-run
# is byte-identical.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root}
mkdir -p "$out/proto"
out=$(cd "$out" && pwd)

PATH="$PATH:$(go env GOPATH)/bin"
command -v protoc >/dev/null || { echo "generate.sh: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }
command -v protoc-gen-go >/dev/null || { echo "generate.sh: protoc-gen-go not found (go install google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION)" >&2; exit 1; }
have=$(protoc-gen-go --version | awk '{print $2}')
if [[ "$have" != "$PROTOC_GEN_GO_VERSION" ]]; then
	echo "generate.sh: protoc-gen-go is $have, want $PROTOC_GEN_GO_VERSION" >&2
	exit 1
fi

cd "$root"
# Sorted, fixed list of inputs; paths relative to the module root become
# the registered file names ("proto/core.proto").
mapfile -t files < <(LC_ALL=C ls proto/*.proto)
protoc --proto_path=. \
	--go_out="$out" --go_opt=paths=source_relative \
	"${files[@]}"
