# crhook: build, test and demo on a fresh Debian machine as root.
# `make demo` and `make test` install what is missing first (deps).

GO        ?= go
GOBIN     := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)
BIN       := bin/crhook
PREFIX    ?= /usr/local
HOOKS_D   ?= /usr/share/containers/oci/hooks.d
PROTOC_GEN_GO_VERSION := v1.36.12
GOLANGCI_VERSION      := v2.6.2

# Debian packages the build and the tests need, as "command-or-file:package".
DEB_NEEDS := gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev protoc:protobuf-compiler \
             runc:runc crun:crun /bin/busybox:busybox-static podman:podman \
             /usr/bin/redis-server:redis-server /usr/sbin/nginx:nginx-light /usr/bin/python3:python3

.PHONY: all build deps test demo generate bench lint install fuzz soak clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/crhook

# deps installs missing Debian packages and Go tools. It is a no-op on a
# machine that has them.
deps:
	@missing=""; for need in $(DEB_NEEDS); do \
	  what=$${need%%:*}; pkg=$${need##*:}; \
	  case $$what in /*) test -e $$what ;; *) command -v $$what >/dev/null ;; esac || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v protoc-gen-go >/dev/null || $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

generate: deps
	./proto/generate.sh

test: deps build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

demo: deps build
	./scripts/demo.sh

# bench: the table of ./bench (medians, alternated runs; set CRIU=/path/to/criu
# for the side-by-side baseline, BENCHFLAGS for e.g. -runs 7 -sizes 64), then
# the Go benchmarks.
bench: deps build
	$(GO) run ./bench -crhook $(BIN) $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench . -benchtime 5x ./crcore/...

# fuzz: every decoder's fuzz target for FUZZTIME each (image framing, the
# whole loader over a real dump, the hook's state JSON and annotations).
FUZZTIME ?= 20s
fuzz: deps
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./crcore/internal/image
	$(GO) test -run '^$$' -fuzz '^FuzzLoadImages$$' -fuzztime $(FUZZTIME) ./crcore
	$(GO) test -run '^$$' -fuzz '^FuzzHookState$$' -fuzztime $(FUZZTIME) ./hook
	$(GO) test -run '^$$' -fuzz '^FuzzAnnotation$$' -fuzztime $(FUZZTIME) ./hook

# soak: 100 checkpoint/restore cycles of a busy process, state and leaks
# checked every cycle (make test runs 10), then 100 of a runc container
# (checkpoint, delete, restore into a new container of the bundle; make
# test runs 3).
soak: deps build
	CRHOOK_SOAK_CYCLES=100 $(GO) test -count=1 -timeout 30m -run '^TestSoak' -v ./crcore
	CRHOOK_SOAK_CONTAINER_CYCLES=100 $(GO) test -count=1 -timeout 30m -run '^TestSoakContainer$$' -v ./integration

lint: deps
	@command -v golangci-lint >/dev/null || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	gofmt -l . | tee /dev/stderr | (! read -r _)
	$(GO) vet ./...
	golangci-lint run ./...

# install: the binary, and podman's hooks.d file that runs crhook as the
# createRuntime hook of containers annotated io.crhook.restore=DIR.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/crhook
	install -d $(DESTDIR)$(HOOKS_D)
	printf '{\n  "version": "1.0.0",\n  "hook": {"path": "%s", "args": ["crhook", "hook"]},\n  "when": {"annotations": {"io.crhook.restore": ".+"}},\n  "stages": ["createRuntime"]\n}\n' \
	  "$(PREFIX)/bin/crhook" > $(DESTDIR)$(HOOKS_D)/crhook.json
	chmod 0644 $(DESTDIR)$(HOOKS_D)/crhook.json

clean:
	rm -rf bin
