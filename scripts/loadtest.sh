#!/usr/bin/env bash
# Load scenarios of BENCHMARKS.md against a local server. Loopback only; every
# run is bounded and stops by itself.
#
#   scripts/loadtest.sh quick     # one short fan-out and 1,000 idle connections (make loadtest)
#   scripts/loadtest.sh fanout    # fan-out at 100 and 1,000 members across rates
#   scripts/loadtest.sh light     # light rooms: 50, 100, 1,000 members at 10 and 100 msg/s
#                                 # (BIN_B=other-binary alternates two servers, ROUNDS=3 each)
#   scripts/loadtest.sh conns     # memory per idle connection at 1k, 10k, 19k
#   scripts/loadtest.sh compress  # fan-out with and without permessage-deflate
#   scripts/loadtest.sh redis     # fan-out, memory vs Redis history store, alternating (needs redis-server on 127.0.0.1:6379)
#   scripts/loadtest.sh cluster   # fan-out over a 3-node cluster (Redis broker and history; needs redis-server)
#   scripts/loadtest.sh chaos     # Redis SIGKILLed under a 3-node cluster and restarted (needs redis-server); lost/duplicated deliveries
#   scripts/loadtest.sh rooms     # 2,000 rooms x 5 members at rising RATES, on 1 node and on 3 (Redis broker and history);
#                                 # BIN_B=other-binary alternates two servers, ROUNDS=3 each; LOCK=FILE wraps each run in flock
#   scripts/loadtest.sh all
#   scripts/loadtest.sh run fanout -n 1000 -r 600 -d 10s   # any one `chatserver bench` scenario
#
# Each run starts a fresh server pinned to CPU 0 (taskset), with CONFIG (default
# config/bench.yaml: the default pipelines, rate limit raised), and prints the
# generator's JSON line. Every run gets its own Redis key prefix
# (CHATSERVER_REDIS_KEY_PREFIX=chatserver-bench-PID-N:) and its keys are deleted
# afterwards, so runs with config/bench-redis.yaml start from an empty history.
# BIN (default bin/chatserver) is the server; GEN (default BIN) the generator.
# SERVER_CPU (default 0) and GEN_CPU (default: unpinned) choose the CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/chatserver}
GEN=${GEN:-$BIN}
PORT=${PORT:-8100}
SERVER_CPU=${SERVER_CPU:-0}
[ -x "$BIN" ] || go build -o "$BIN" ./cmd/chatserver

RUNS=0
PREFIX=""
# newprefix sets PREFIX to a Redis key prefix of this run's own.
newprefix() { RUNS=$((RUNS + 1)); PREFIX="chatserver-bench-$$-$RUNS:"; }
# dropkeys deletes the keys under PREFIX (if redis-cli is there) and clears it.
dropkeys() {
	if [ -n "$PREFIX" ] && command -v redis-cli >/dev/null; then
		redis-cli --scan --pattern "$PREFIX*" | xargs -r redis-cli del >/dev/null || true
	fi
	PREFIX=""
}

# LIVE lists the PIDs of the processes the current run started and has not
# stopped yet (servers, redis-server, generator), RUNDIR its folder. If the
# script ends early (INT, TERM, HUP, or a failing command under set -e), the
# EXIT trap stops exactly those processes, by PID, deletes the run's keys and
# removes the folder. Background processes of a script ignore SIGINT, so a
# Ctrl-C alone would leave them running. Generators and pauses run in the
# background and are waited for, so a signal to this script is acted on at
# once rather than when they end.
LIVE=()
RUNDIR=""
# live PID...: PIDs started; unlive PID...: PIDs stopped.
live() { LIVE+=("$@"); }
unlive() {
	local keep=() p q
	for p in "${LIVE[@]}"; do
		for q in "$@"; do [ "$p" = "$q" ] && continue 2; done
		keep+=("$p")
	done
	LIVE=("${keep[@]}")
}
# stop PID...: SIGTERM, then waits for them (they are children of this shell).
stop() {
	[ $# -gt 0 ] || return 0
	kill "$@" 2>/dev/null || true
	wait "$@" 2>/dev/null || true
	unlive "$@"
}
cleanup() {
	stop "${LIVE[@]}"
	dropkeys
	if [ -n "$RUNDIR" ]; then rm -rf "$RUNDIR"; fi
	RUNDIR=""
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
# startgen ARGS...: `GEN bench ARGS` in the background, pinned to GEN_CPU if
# set, ended after 600 s. GPID is timeout's PID and the generator is its child
# (no shell between them), so stopping GPID stops the generator and waits for
# it.
startgen() {
	local pin=()
	if [ -n "${GEN_CPU:-}" ]; then pin=(taskset -c "$GEN_CPU"); fi
	timeout 600 "${pin[@]}" "$GEN" bench "$@" &
	GPID=$!
	live "$GPID"
}
# pause SECONDS: sleep, interruptible by the traps above.
pause() {
	sleep "$1" &
	local s=$!
	live "$s"
	wait "$s" || true
	unlive "$s"
}

# waitport PORT PID: until 127.0.0.1:PORT accepts; fails if PID exits.
waitport() {
	for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && break; sleep 0.1; done
	if ! kill -0 "$2" 2>/dev/null; then
		echo "server did not start (is 127.0.0.1:$1 free? set PORT)" >&2
		return 1
	fi
}

# run SCENARIO ARGS...: a fresh server, one generator run against it.
run() {
	newprefix
	CHATSERVER_REDIS_KEY_PREFIX=$PREFIX taskset -c "$SERVER_CPU" "$BIN" serve --config "${CONFIG:-config/bench.yaml}" --addr "127.0.0.1:$PORT" 2>>"${LOG:-/dev/null}" &
	local pid=$!
	live "$pid"
	waitport "$PORT" "$pid" || { stop "$pid"; dropkeys; return 1; }
	startgen "$@" --addr "127.0.0.1:$PORT" --pid "$pid" --json
	wait "$GPID" || echo "{\"failed\": \"$*\"}"
	unlive "$GPID"
	stop "$pid"
	dropkeys
}

# cluster SCENARIO ARGS...: NODES (default 3) fresh nodes
# (config/bench-cluster.yaml: Redis broker and history, one key prefix) on
# ports PORT, PORT+1, …, pinned to SERVER_CPU; one generator run spreading its
# members over them.
cluster() {
	newprefix
	local pids=() addrs=() p last=$((${NODES:-3} - 1))
	for i in $(seq 0 "$last"); do
		p=$((PORT + i))
		CHATSERVER_REDIS_KEY_PREFIX=$PREFIX taskset -c "$SERVER_CPU" "$BIN" serve --config config/bench-cluster.yaml --addr "127.0.0.1:$p" 2>>"${LOG:-/dev/null}" &
		pids+=($!)
		live $!
		addrs+=("127.0.0.1:$p")
	done
	local ok=1
	for i in $(seq 0 "$last"); do waitport $((PORT + i)) "${pids[$i]}" || ok=0; done
	if [ "$ok" = 1 ]; then
		local a; a=$(IFS=,; echo "${addrs[*]}")
		local ps; ps=$(IFS=,; echo "${pids[*]}")
		startgen "$@" --addr "$a" --pid "$ps" --json
		wait "$GPID" || echo "{\"failed\": \"$*\"}"
		unlive "$GPID"
	fi
	stop "${pids[@]}"
	dropkeys
	[ "$ok" = 1 ]
}

# freeport prints a loopback TCP port nobody listens on.
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# chaos MODE OUTAGE: three nodes (config/bench-cluster.yaml) on a redis-server
# of their own on a free port (MODE aof: appendonly, appendfsync always; MODE
# empty: no persistence, so it restarts empty); a fan-out run of CHAOS_MEMBERS
# (default 300) members and 2 publishers at CHAOS_RATE (default 100) msg/s for
# CHAOS_SECONDS (default 20) s; CHAOS_KILL_AT (default 8) s after the first
# message the Redis process is SIGKILLed (by its PID) and started again OUTAGE
# seconds later on the same port. OUTBOX sets broker.outbox_size (default
# 10000). Prints the generator's JSON line with the fault added. Everything
# started here is stopped here, by PID, and the folder (the Redis data) is
# removed, also when the script is interrupted (cleanup).
chaos() {
	local mode=$1 outage=$2
	local dir rport rpid
	dir=$(mktemp -d)
	RUNDIR=$dir
	rport=$(freeport)
	startredis() {
		local persist=(--appendonly no)
		[ "$mode" = aof ] && persist=(--appendonly yes --appendfsync always)
		redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir" --save "" "${persist[@]}" >>"$dir/redis.log" 2>&1 &
		rpid=$!
		live "$rpid"
		for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
		echo "redis-server did not start on $rport" >&2
		return 1
	}
	startredis || { cleanup; return 1; }
	local pids=() addrs=() p
	for i in 0 1 2; do
		p=$((PORT + i))
		CHATSERVER_REDIS_URL="redis://127.0.0.1:$rport/0" CHATSERVER_REDIS_KEY_PREFIX="chaos:" \
			CHATSERVER_BROKER_OUTBOX_SIZE="${OUTBOX:-10000}" \
			taskset -c "$SERVER_CPU" "$BIN" serve --config config/bench-cluster.yaml --addr "127.0.0.1:$p" 2>>"${LOG:-/dev/null}" &
		pids+=($!)
		live $!
		addrs+=("127.0.0.1:$p")
	done
	local ok=1
	for i in 0 1 2; do waitport $((PORT + i)) "${pids[$i]}" || ok=0; done
	if [ "$ok" = 1 ]; then
		local a ps
		a=$(IFS=,; echo "${addrs[*]}")
		ps=$(IFS=,; echo "${pids[*]}")
		startgen fanout -n "${CHAOS_MEMBERS:-300}" -p 2 -r "${CHAOS_RATE:-100}" -d "${CHAOS_SECONDS:-20}s" --drain 45s \
			--addr "$a" --pid "$ps" --json --started-file "$dir/started" >"$dir/result"
		local gpid=$GPID
		for _ in $(seq 1200); do [ -e "$dir/started" ] && break; kill -0 "$gpid" 2>/dev/null || break; pause 0.05; done
		pause "${CHAOS_KILL_AT:-8}"
		kill -KILL "$rpid"; wait "$rpid" 2>/dev/null || true
		unlive "$rpid"
		pause "$outage"
		startredis || true
		wait "$gpid" || true
		unlive "$gpid"
		local res; res=$(tail -n1 "$dir/result")
		echo "{\"fault\": {\"redis\": \"$mode\", \"outage_s\": $outage, \"outbox_size\": ${OUTBOX:-10000}}, \"run\": ${res:-null}}"
	fi
	stop "${pids[@]}"
	stop "$rpid"
	rm -rf "$dir"
	RUNDIR=""
	[ "$ok" = 1 ]
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
light)
	# Light rooms (BENCHMARKS.md, "Light load"): BIN and, if set, BIN_B
	# alternate, ROUNDS (3) runs each of every members x rate.
	for n in 50 100 1000; do
		for r in 10 100; do
			for _ in $(seq "${ROUNDS:-3}"); do
				run fanout -n $n -r $r -d 10s
				if [ -n "${BIN_B:-}" ]; then BIN=$BIN_B GEN=${GEN_B:-$GEN} run fanout -n $n -r $r -d 10s; fi
			done
		done
	done
	;;
compress)
	run fanout -n 1000 -r 600 -d 10s
	run fanout -n 1000 -r 600 -d 10s --compress
	;;
redis)
	# memory and Redis history store alternating, three runs each per rate.
	for r in ${RATES:-600 1000 1500}; do
		for _ in 1 2 3; do
			CONFIG=config/bench.yaml run fanout -n 1000 -r $r -d 10s
			CONFIG=config/bench-redis.yaml run fanout -n 1000 -r $r -d 10s
		done
	done
	;;
cluster)
	# 999 members, 333 per node; the 2 publishers on nodes 1 and 2.
	for r in 300 600; do
		for _ in 1 2 3; do cluster fanout -n 999 -r $r -d 10s; done
	done
	;;
chaos)
	# Outages of 1, 3 and 10 s with a Redis that keeps its data and one that
	# comes back empty; then one longer than the outbox holds (OUTBOX 200:
	# ~500 frames held per node in 10 s at 100 msg/s over 2 publishers).
	for mode in aof empty; do
		for outage in 1 3 10; do chaos "$mode" "$outage"; done
	done
	OUTBOX=200 chaos aof 10
	;;
rooms)
	# Many small rooms (BENCHMARKS.md, "Many small rooms"): 2,000 rooms x 5
	# members (10,000 connections) on NODES_LIST (default "1 3") nodes of a
	# cluster, every rate of RATES, ROUNDS (3) runs each; BIN and, if set,
	# BIN_B alternate (GEN, default BIN, generates for both: BIN_B need not
	# know `bench rooms`). LOCK=FILE runs each run under `flock FILE`, so
	# measurements of people sharing the machine do not overlap.
	for nodes in ${NODES_LIST:-1 3}; do
		for r in ${RATES:-4000 6000 8000 10000}; do
			for _ in $(seq "${ROUNDS:-3}"); do
				for bin in "$BIN" ${BIN_B:-}; do
					echo "# BIN=$bin NODES=$nodes RATE=$r"
					if [ -n "${LOCK:-}" ]; then
						flock "$LOCK" env BIN="$bin" GEN="$GEN" NODES="$nodes" "$0" run-cluster rooms --rooms 2000 --members 5 -r "$r" -d 10s
					else
						BIN=$bin NODES=$nodes cluster rooms --rooms 2000 --members 5 -r "$r" -d 10s
					fi
				done
			done
		done
	done
	;;
run-chaos)
	shift
	chaos "$@"
	;;
all)
	"$0" fanout; "$0" conns; "$0" compress
	;;
run)
	shift
	run "$@"
	;;
run-cluster)
	shift
	cluster "$@"
	;;
*)
	echo "usage: $0 quick|fanout|light|conns|compress|redis|cluster|chaos|rooms|all|run SCENARIO [FLAGS]|run-cluster SCENARIO [FLAGS]|run-chaos aof|empty OUTAGE_S" >&2; exit 2
	;;
esac
