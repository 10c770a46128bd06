# chatserver — the commands README promises.
GO       ?= go
BIN      ?= bin/chatserver
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS  := -X github.com/chatserver/chatserver/pkg/cli.Version=$(VERSION) -X github.com/chatserver/chatserver/pkg/cli.Commit=$(COMMIT)
GOLANGCI := $(shell $(GO) env GOPATH)/bin/golangci-lint
GOLANGCI_VERSION := v2.15.0

JS_DIR   := clients/js

.PHONY: build run test test-js bench loadtest lint fuzz clean

build: ## build bin/chatserver
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/chatserver

ADDR ?=
CONFIG ?=
run: ## run the chat room (embedded config, :8000; make run ADDR=127.0.0.1:9000 CONFIG=my.yaml)
	$(GO) run ./cmd/chatserver serve $(if $(ADDR),--addr $(ADDR)) $(if $(CONFIG),--config $(CONFIG))

# The WebSocket tests run twice: with the fast paths (the default config) and
# with every fast path off (fast_paths.*: false, the libraries' own way), so
# that both stay correct and a fast path is always checked against the
# behaviour it replaces.
FAST_PATHS_OFF := CHATSERVER_FAST_PATHS_IDLE_READER=false CHATSERVER_FAST_PATHS_IDLE_POLLER=false \
	CHATSERVER_FAST_PATHS_FRAME_WRITER=false \
	CHATSERVER_FAST_PATHS_ENVELOPE_JSON=false

test: ## vet and every test with the race detector (Redis and chromium tests included); pkg/server again with the fast paths off; then test-js
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	$(FAST_PATHS_OFF) $(GO) test -race -count=1 -timeout 20m ./pkg/server
	$(MAKE) test-js

# npm ci runs when the devDependencies (typescript, ws) are not installed yet.
test-js: build ## the JavaScript client: tsc --noEmit and its Node tests against bin/chatserver
	cd $(JS_DIR) && { [ -x node_modules/.bin/tsc ] || npm ci --no-audit --no-fund; } && CHATSERVER_BIN=$(CURDIR)/$(BIN) npm test

# GODEBUG: new goroutines start at 2 KB, as idle readers do in a server full of them (in a
# test binary the adaptive start would follow the test's own goroutines; BENCHMARKS.md).
bench: ## Go benchmarks of the pipeline, the hub and idle connections
	GODEBUG=adaptivestackstart=0 $(GO) test -run '^$$' -bench . -benchmem -count 1 ./...

# Fuzz targets as package:Name; each runs alone (go test -fuzz takes one
# target in one package) for FUZZTIME on top of its corpus in testdata/fuzz.
FUZZTIME ?= 20s
FUZZ_TARGETS := ./pkg/server:FuzzDecodeInbound ./pkg/server:FuzzMessagePipeline \
	./pkg/config:FuzzLoad ./pkg/plugins:FuzzIdentity \
	./pkg/server:FuzzFrameWriter ./pkg/plugins:FuzzRenderHTMLFast ./pkg/pipeline:FuzzAppendJSON

fuzz: ## run every fuzz target for FUZZTIME (20s) each
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

loadtest: build ## short load scenarios on loopback (fan-out to 100 members, 1,000 idle connections); see BENCHMARKS.md
	BIN=$(BIN) scripts/loadtest.sh quick

lint: $(GOLANGCI) ## golangci-lint (installed from the Go module proxy if absent)
	$(GOLANGCI) run ./...

$(GOLANGCI):
	$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

clean:
	rm -rf bin
