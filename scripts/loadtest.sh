#!/usr/bin/env bash
# Load scenarios of BENCHMARKS.md against a local server. Loopback only; every
# run is bounded and stops by itself.
#
#   scripts/loadtest.sh quick     # one short fan-out and 1,000 idle connections (make loadtest)
#   scripts/loadtest.sh fanout    # fan-out at 100 and 1,000 members across rates
#   scripts/loadtest.sh conns     # memory per idle connection at 1k, 10k, 19k
#   scripts/loadtest.sh compress  # fan-out with and without permessage-deflate
#   scripts/loadtest.sh all
#   scripts/loadtest.sh run fanout -n 1000 -r 600 -d 10s   # any one `chatserver bench` scenario
#
# Each run starts a fresh server pinned to CPU 0 (taskset), with config/bench.yaml
# (the default pipelines, rate limit raised), and prints the generator's JSON line.
# BIN (default bin/chatserver) is the server; GEN (default BIN) the generator.
# SERVER_CPU (default 0) and GEN_CPU (default: unpinned) choose the CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/chatserver}
GEN=${GEN:-$BIN}
PORT=${PORT:-8100}
SERVER_CPU=${SERVER_CPU:-0}
[ -x "$BIN" ] || go build -o "$BIN" ./cmd/chatserver

gen() { if [ -n "${GEN_CPU:-}" ]; then taskset -c "$GEN_CPU" "$GEN" "$@"; else "$GEN" "$@"; fi; }

# run SCENARIO ARGS...: a fresh server, one generator run against it.
run() {
	taskset -c "$SERVER_CPU" "$BIN" serve --config config/bench.yaml --addr "127.0.0.1:$PORT" 2>>"${LOG:-/dev/null}" &
	local pid=$!
	for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "server did not start (is 127.0.0.1:$PORT free? set PORT)" >&2
		return 1
	fi
	timeout 600 bash -c "$(declare -f gen); GEN_CPU='${GEN_CPU:-}' GEN='$GEN' gen bench $* --addr 127.0.0.1:$PORT --pid $pid --json" || echo "{\"failed\": \"$*\"}"
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

case "${1:-quick}" in
quick)
	run fanout -n 100 -r 200 -d 5s
	run conns -n 1000
	;;
fanout)
	for r in 1000 3000 6000 10000; do run fanout -n 100 -r $r -d 10s; done
	for r in 300 600 1000 1500 2000; do run fanout -n 1000 -r $r -d 10s; done
	;;
conns)
	for n in 1000 10000 19000; do run conns -n $n --settle 5s; done
	;;
compress)
	run fanout -n 1000 -r 600 -d 10s
	run fanout -n 1000 -r 600 -d 10s --compress
	;;
all)
	"$0" fanout; "$0" conns; "$0" compress
	;;
run)
	shift
	run "$@"
	;;
*)
	echo "usage: $0 quick|fanout|conns|compress|all|run SCENARIO [FLAGS]" >&2; exit 2
	;;
esac
