#!/usr/bin/env bash
# 100,000 connections across a cluster on this machine (BENCHMARKS.md, "100,000
# connections across nodes"). Loopback only; every part is bounded and the
# script stops everything it started, by PID, when it ends (trap on EXIT).
#
#   scripts/scale100k.sh                        # 6 nodes, 6 generators, 100,000 members, 1,000 rooms
#   CONNS=6000 ROOMS=100 scripts/scale100k.sh   # a quick run of the same shape
#
# What it does: builds bin/chatserver; starts NODES nodes (config/bench-cluster.yaml:
# Redis broker and Redis history on the shared Redis at 127.0.0.1:6379, one key prefix of
# this run's own, the server API on with a random key) on ports PORT, PORT+1, …; starts
# GENS `chatserver bench conns` generators, each holding CONNS/GENS members (member j on
# node j % NODES, in room (j / NODES) % ROOMS); they meet in a folder, so every node's RSS
# baseline is read before anyone joins. Once all have joined and settled, generator 0 posts
# one message per room through the server API (round-robin over the nodes) and every
# generator checks that each of its members got its room's message exactly once.
# Prints each generator's JSON line and a summary; exits non-zero if any member missed its
# message, a generator failed, or a node died. Deletes its Redis keys and its folder.
#
# Then it waits LEAVE_WAIT (15 s) for the nodes to absorb the members' leaving, stops them and
# counts the warnings and errors in their logs.
# Settings (environment): NODES (6), GENS (6), CONNS (100000), ROOMS (1000), PORT (8200),
# SETTLE (5s: after a generator's last join, before the RSS is read), CHECK_TIMEOUT (60s),
# HOLD (0s: keep the members connected this long after the check), DIAL (50: handshakes in
# flight per generator), MAX_SECONDS (600: each
# generator's hard bound), BIN (bin/chatserver, rebuilt unless NOBUILD=1), CONFIG
# (config/bench-cluster.yaml), KEEP_LOGS (a folder to copy the nodes' and generators' logs to).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-6}
GENS=${GENS:-6}
CONNS=${CONNS:-100000}
ROOMS=${ROOMS:-1000}
PORT=${PORT:-8200}
SETTLE=${SETTLE:-5s}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-60s}
HOLD=${HOLD:-0s}
DIAL=${DIAL:-50}
MAX_SECONDS=${MAX_SECONDS:-600}
BIN=${BIN:-bin/chatserver}
CONFIG=${CONFIG:-config/bench-cluster.yaml}
[ "${NOBUILD:-}" = 1 ] || go build -o "$BIN" ./cmd/chatserver

per_gen=$(((CONNS + GENS - 1) / GENS))
per_node=$(((CONNS + NODES - 1) / NODES))
limit=$(ulimit -n)
read -r port_lo port_hi < /proc/sys/net/ipv4/ip_local_port_range
ports=$((port_hi - port_lo + 1))
echo "scale: $CONNS members, $NODES nodes (~$per_node each), $GENS generators (~$per_gen each), $ROOMS rooms"
echo "limits: open files $limit per process; ephemeral ports $port_lo-$port_hi ($ports per destination port);" \
	"somaxconn $(cat /proc/sys/net/core/somaxconn); file-max $(cat /proc/sys/fs/file-max)"
# A node holds its members, its Redis connections and its listener; a generator its
# members and a few files.
if [ $((per_node + 200)) -gt "$limit" ] || [ $((per_gen + 64)) -gt "$limit" ]; then
	echo "scale: ~$per_node members per node or ~$per_gen per generator do not fit $limit open files: add NODES or GENS" >&2
	exit 2
fi
# Generators connect without binding a source address: the kernel reuses a source port
# towards different destinations, so each node's port needs its members' worth of
# ephemeral ports from 127.0.0.1.
if [ $((per_node + 1000)) -gt "$ports" ]; then
	echo "scale: ~$per_node members per node need more than the $ports ephemeral ports towards one node: add NODES" >&2
	exit 2
fi

dir=$(mktemp -d /tmp/chatserver-scale.XXXXXX)
mkdir "$dir/sync"
prefix="chatserver-scale-$$-$(date +%s):"
key=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
run="s$$"
node_pids=()
gen_pids=()
watch_pid=
cleanup() {
	local rc=$?
	# Only what this script started, by PID.
	for p in "${gen_pids[@]}" "${node_pids[@]}" $watch_pid; do kill "$p" 2>/dev/null || true; done
	for p in "${gen_pids[@]}" "${node_pids[@]}" $watch_pid; do wait "$p" 2>/dev/null || true; done
	if command -v redis-cli >/dev/null; then
		redis-cli --scan --pattern "$prefix*" | xargs -r redis-cli del >/dev/null || true
	fi
	if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$dir"/*.log "$dir"/*.json "$KEEP_LOGS"/ 2>/dev/null || true; fi
	rm -rf "$dir"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

addrs=()
for i in $(seq 0 $((NODES - 1))); do
	p=$((PORT + i))
	SCALE_API_KEYS=$key CHATSERVER_API_KEYS_ENV=SCALE_API_KEYS CHATSERVER_REDIS_KEY_PREFIX=$prefix \
		"$BIN" serve --config "$CONFIG" --addr "127.0.0.1:$p" 2>"$dir/node$i.log" &
	node_pids+=($!)
	addrs+=("127.0.0.1:$p")
done
for i in $(seq 0 $((NODES - 1))); do
	for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$((PORT + i))") 2>/dev/null && break; sleep 0.1; done
	if ! kill -0 "${node_pids[$i]}" 2>/dev/null; then
		echo "scale: node $i did not start (is 127.0.0.1:$((PORT + i)) free? set PORT); its log:" >&2
		tail -5 "$dir/node$i.log" >&2
		exit 1
	fi
done
a=$(IFS=,; echo "${addrs[*]}")
ps=$(IFS=,; echo "${node_pids[*]}")
echo "nodes: $a (pids $ps); Redis key prefix $prefix; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"

start=$SECONDS
for g in $(seq 0 $((GENS - 1))); do
	off=$((g * per_gen))
	n=$((CONNS - off < per_gen ? CONNS - off : per_gen))
	post=()
	[ "$g" = 0 ] && post=(--post)
	CHATSERVER_BENCH_API_KEY=$key timeout "$MAX_SECONDS" "$BIN" bench conns -n "$n" --offset "$off" --rooms "$ROOMS" --room scale \
		--addr "$a" --pid "$ps" --sync "$dir/sync" --generators "$GENS" --check "$run" "${post[@]}" \
		--dial-concurrency "$DIAL" --settle "$SETTLE" --check-timeout "$CHECK_TIMEOUT" --hold "$HOLD" --json >"$dir/gen$g.json" 2>"$dir/gen$g.log" &
	gen_pids+=($!)
done
# Once every generator is ready: how many sockets go from generators to the nodes, and how
# many distinct source ports they use (more sockets than ports: a port serves several nodes).
(
	for _ in $(seq $((MAX_SECONDS * 2))); do
		[ "$(find "$dir/sync" -name 'ready.*' | wc -l)" -ge "$GENS" ] && break
		sleep 0.5
	done
	ss -Htn state established "( dport >= :$PORT and dport <= :$((PORT + NODES - 1)) )" |
		awk '{ n = split($3, a, ":"); p[a[n]] = 1; c++ } END { printf "%d %d\n", c, length(p) }' >"$dir/ports"
) &
watch_pid=$!
failed=0
for g in $(seq 0 $((GENS - 1))); do
	if ! wait "${gen_pids[$g]}"; then
		failed=$((failed + 1))
		echo "scale: generator $g failed: $(tail -c 400 "$dir/gen$g.log")" >&2
	fi
done
gen_pids=()
elapsed=$((SECONDS - start))
kill "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true
watch_pid=
read -r sockets srcports <"$dir/ports" 2>/dev/null || { sockets=?; srcports=?; }
dead=0
for i in $(seq 0 $((NODES - 1))); do kill -0 "${node_pids[$i]}" 2>/dev/null || { dead=$((dead + 1)); echo "scale: node $i died" >&2; }; done
# The generators closed every member at once (a leave storm: an offline frame per member
# through Redis); give the nodes LEAVE_WAIT to work through it, stop them (SIGTERM, by PID)
# and report what their logs say went wrong.
sleep "${LEAVE_WAIT:-15}"
for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${node_pids[@]}"; do wait "$p" 2>/dev/null || true; done
node_pids=()

for g in $(seq 0 $((GENS - 1))); do echo "gen$g: $(tail -n1 "$dir/gen$g.json")"; done
# The summary: the JSON lines of the generators that finished.
cat "$dir"/gen*.json | jq -rs --argjson conns "$CONNS" --argjson failed "$failed" --argjson dead "$dead" --argjson elapsed "$elapsed" \
	--arg sockets "$sockets" --arg srcports "$srcports" --arg ports "$ports" '
	map(select(.scenario == "conns")) as $g
	| ($g | map(.conns) | add // 0) as $connected
	| ($g | map(.check) | map(select(. != null))) as $c
	| ($g | map(.join_s) | max // 0) as $join
	| "summary: \($connected) of \($conns) members connected and checked (generators failed: \($failed), nodes died: \($dead)); \($elapsed) s in all",
	  "  join        all in \($join | .*100 | round / 100) s (\(if $join > 0 then ($connected / $join | round) else 0 end) joins/s); per member p50 \($g | map(.join_latency.p50_ms) | min // 0)-\($g | map(.join_latency.p50_ms) | max // 0) ms, p99 \($g | map(.join_latency.p99_ms) | min // 0)-\($g | map(.join_latency.p99_ms) | max // 0) ms, max \($g | map(.join_latency.max_ms) | max // 0) ms (ranges over generators)",
	  "  presence    \($g | map(.frames_per_conn) | add / length | .*10 | round / 10) frames per member before the check; dropped by a node \($g | map(.disconnected) | add)",
	  ( $g[0].nodes // [] | .[] | "  node        \(.addr) pid \(.pid): \(.conns) members, RSS \(.base_rss_mb | round) -> \(.rss_mb | round) MB: \(.rss_kb_per_conn * 10 | round / 10) KB per connection, CPU \(.cpu_s) s" ),
	  "  nodes       RSS \($g[0].server_rss_mb // 0 | round) MB in all, \($g[0].server_rss_kb_per_conn // 0 | .*10 | round / 10) KB per connection over \($g[0].total_conns // 0) members",
	  "  check       \($c | map(.posted) | add // 0) of \($rooms) rooms posted (errors \($c | map(.post_errors // 0) | add // 0)); \($c | map(.delivered) | add // 0) of \($c | map(.members) | add // 0) members got their room message: missing \($c | map(.missing) | add // 0), duplicates \($c | map(.duplicates) | add // 0), foreign \($c | map(.foreign) | add // 0)",
	  "              all delivered \($c | map(.all_delivered_s) | max // 0 | .*1000 | round / 1000) s after every generator was ready; post to arrival p50 \($c | map(.latency.p50_ms) | max // 0) ms, p99 \($c | map(.latency.p99_ms) | max // 0) ms, max \($c | map(.latency.max_ms) | max // 0) ms (worst generator)",
	  "  sockets     \($sockets) established towards the nodes once all were ready, from \($srcports) distinct source ports of 127.0.0.1 (range \($ports))",
	  "  ok          \(($failed == 0) and ($dead == 0) and ($connected == $conns) and ($c | length) == ($g | length) and ($c | all(.ok)))   loadavg \($g[0].machine.loadavg // "?")"
' --argjson rooms "$ROOMS"
echo "  node logs   $(cat "$dir"/node*.log | grep -c 'level=WARN') warnings, $(cat "$dir"/node*.log | grep -c 'level=ERROR') errors (by kind, below)"
# (grep finds nothing in a clean run: not a failure.)
cat "$dir"/node*.log | { grep -E 'level=(WARN|ERROR)' || true; } | sed -E 's/^time=([^ ]*) level=([A-Z]+) msg="([^"]*)".*err="([^"]*)".*/\2 \3: \4/; s/^time=([^ ]*) level=([A-Z]+) msg="([^"]*)"(.*)/\2 \3\4/' |
	sed -E 's/ (room|id|dropped|held)=[^ ]*//g' | sort | uniq -c | sort -rn | head -5 | sed 's/^/             /'
[ "$failed" = 0 ] && [ "$dead" = 0 ]
