#!/usr/bin/env bash
# `make demo`: three demo backends, three ringman nodes and nginx (nginx/lua.conf)
# on local ports, unprivileged. Prints what to curl, shows where a few URLs land,
# then waits. Ctrl-C, or `make demo-stop` (nginx/demo.sh stop) from another
# terminal, stops everything it started; nothing else is touched.
#
#   nginx/demo.sh          start and wait (run `make demo`: it installs nginx and builds first)
#   nginx/demo.sh stop     stop a running demo (the PIDs in $DEMO_DIR/pids)
#
# Ports (all on 127.0.0.1; node/backend i uses BASE+i-1), overridable:
#   DEMO_PORT=8080          nginx
#   DEMO_BACKEND_PORT=9001  backends b1..b3 (9001-9003)
#   DEMO_GOSSIP_PORT=7946   ringman gossip, TCP and UDP (7946-7948)
#   DEMO_RESP_PORT=6381     ringman RESP (6381-6383); nginx asks node 1
#   DEMO_HTTP_PORT=7381     ringman HTTP API (7381-7383)
#   DEMO_DIR=.demo          state: data dirs, logs, rendered nginx prefix, pids
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DEMO_PORT=${DEMO_PORT:-8080}
DEMO_BACKEND_PORT=${DEMO_BACKEND_PORT:-9001}
DEMO_GOSSIP_PORT=${DEMO_GOSSIP_PORT:-7946}
DEMO_RESP_PORT=${DEMO_RESP_PORT:-6381}
DEMO_HTTP_PORT=${DEMO_HTTP_PORT:-7381}
DEMO_DIR=${DEMO_DIR:-.demo}
mkdir -p "$DEMO_DIR"
STATE=$(cd "$DEMO_DIR" && pwd)
PIDS=$STATE/pids
RINGMAN=$ROOT/bin/ringman
NODES=3
HOST=127.0.0.1
START_TIMEOUT=${DEMO_START_TIMEOUT:-30} # seconds for everything to come up
STOP_TIMEOUT=${DEMO_STOP_TIMEOUT:-10}   # seconds after SIGTERM before SIGKILL

log() { printf 'demo: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# ---- stopping ------------------------------------------------------------

# started PID: true when PID is still a process this demo started. Every
# process the demo starts has the absolute state dir on its command line,
# so a stale pids file never makes us signal a recycled PID.
started() {
	local cmd
	[ -r "/proc/$1/cmdline" ] || return 1
	cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *"$STATE"* ]]
}

# group_alive PGID: true while any process of the group exists.
group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# stop_all: SIGTERM to each recorded process group (nginx first, so it stops
# taking requests, then the ringman nodes, then the backends), SIGKILL to the
# groups still alive after STOP_TIMEOUT. Each entry in $PIDS is "name pid";
# each pid leads its own process group.
stop_all() {
	[ -f "$PIDS" ] || return 0
	local name pid groups=()
	while read -r name pid; do
		[ -n "${pid:-}" ] || continue
		[ "$name" = script ] && continue
		# Our process, or its group outliving a dead leader (a PGID is not
		# reused while its group exists: nginx's workers after its master).
		if started "$pid" || { ! kill -0 "$pid" 2>/dev/null && group_alive "$pid"; }; then
			groups+=("$pid")
			log "stopping $name (pid $pid)"
			kill -TERM -- "-$pid" 2>/dev/null || true
		fi
	done < <(tac "$PIDS") # reverse start order: nginx, nodes, backends
	local deadline=$((SECONDS + STOP_TIMEOUT)) left
	while :; do
		left=()
		for pid in "${groups[@]}"; do group_alive "$pid" && left+=("$pid"); done
		[ ${#left[@]} -eq 0 ] && break
		if [ $SECONDS -ge $deadline ]; then
			for pid in "${left[@]}"; do
				log "process group $pid still alive after ${STOP_TIMEOUT}s: SIGKILL"
				kill -KILL -- "-$pid" 2>/dev/null || true
			done
			break
		fi
		sleep 0.1
	done
	rm -f "$PIDS"
}

if [ "${1:-}" = stop ]; then
	[ -f "$PIDS" ] || { log "no demo running (no $PIDS)"; exit 0; }
	# A demo script still waiting in its terminal stops everything itself
	# (its trap); give it the same bound, then stop what is left directly.
	script=$(awk '$1 == "script" { print $2 }' "$PIDS")
	if [ -n "$script" ] && kill -0 "$script" 2>/dev/null &&
		[[ $(tr '\0' ' ' <"/proc/$script/cmdline" 2>/dev/null) == *demo.sh* ]]; then
		log "asking the demo (pid $script) to stop"
		kill -TERM "$script" 2>/dev/null || true
		deadline=$((SECONDS + STOP_TIMEOUT + 5))
		while kill -0 "$script" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
	fi
	stop_all
	log "stopped"
	exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [stop]"

# ---- starting ------------------------------------------------------------

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx not found: apt-get install nginx libnginx-mod-http-lua libxxhash0 (or make deps-nginx)"
for m in ndk_http_module ngx_http_lua_module; do
	[ -f "/usr/lib/nginx/modules/$m.so" ] || die "/usr/lib/nginx/modules/$m.so missing: apt-get install libnginx-mod-http-lua (or make deps-nginx)"
done
[ -x "$RINGMAN" ] || die "$RINGMAN missing: run make build (make demo does)"
command -v curl >/dev/null || die "curl not found: apt-get install curl (or make deps-curl)"

if [ -f "$PIDS" ]; then
	while read -r name pid; do
		if [ -n "${pid:-}" ] && started "$pid"; then
			die "a demo is already running ($name, pid $pid): make demo-stop"
		fi
	done <"$PIDS"
	rm -f "$PIDS"
fi

# port_busy PROTO PORT: true when something is bound to 127.0.0.1:PORT (or any address).
port_busy() {
	local proto=$1 port=$2
	if command -v ss >/dev/null; then
		local flag=-ltnH
		[ "$proto" = udp ] && flag=-lunH
		ss $flag "sport = :$port" 2>/dev/null | grep -q .
	else
		[ "$proto" = tcp ] && (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null
	fi
}

busy=()
check() { # check WHAT PROTO PORT
	port_busy "$2" "$3" && busy+=("$3/$2 ($1)") || true
}
check nginx tcp "$DEMO_PORT"
for i in $(seq 1 $NODES); do
	check "backend b$i" tcp $((DEMO_BACKEND_PORT + i - 1))
	check "ringman n$i gossip" tcp $((DEMO_GOSSIP_PORT + i - 1))
	check "ringman n$i gossip" udp $((DEMO_GOSSIP_PORT + i - 1))
	check "ringman n$i RESP" tcp $((DEMO_RESP_PORT + i - 1))
	check "ringman n$i HTTP" tcp $((DEMO_HTTP_PORT + i - 1))
done
if [ ${#busy[@]} -gt 0 ]; then
	log "these ports are already in use:"
	printf '  %s\n' "${busy[@]}" >&2
	die "free them or choose others, e.g. DEMO_PORT=18080 DEMO_BACKEND_PORT=19001 DEMO_GOSSIP_PORT=17946 DEMO_RESP_PORT=16381 DEMO_HTTP_PORT=17381 make demo"
fi

cleanup() {
	trap - INT TERM EXIT
	echo >&2
	stop_all
	log "stopped; logs and data are kept in $DEMO_DIR/"
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 0' TERM # make demo-stop: not an error
trap 'cleanup' EXIT

echo "script $$" >"$PIDS"

# spawn NAME LOGFILE CMD...: start CMD in its own process group (setsid, so a
# Ctrl-C in the terminal reaches only this script, which stops the rest in
# order), and record its PID.
spawn() {
	local name=$1 logfile=$2
	shift 2
	setsid "$@" >"$logfile" 2>&1 </dev/null &
	echo "$name $!" >>"$PIDS"
}

mkdir -p "$STATE/bin" "$STATE/logs"
log "building the demo backend"
go build -o "$STATE/bin/demo-backend" ./nginx/demo/backend

backends=()
for i in $(seq 1 $NODES); do
	addr=$HOST:$((DEMO_BACKEND_PORT + i - 1))
	backends+=("$addr")
	spawn "backend-b$i" "$STATE/logs/backend-b$i.log" "$STATE/bin/demo-backend" -name "b$i" -addr "$addr"
done

for i in $(seq 1 $NODES); do
	args=(serve --name "n$i" --profile fast
		--bind "$HOST:$((DEMO_GOSSIP_PORT + i - 1))"
		--redis-addr "$HOST:$((DEMO_RESP_PORT + i - 1))"
		--http-addr "$HOST:$((DEMO_HTTP_PORT + i - 1))"
		--data-dir "$STATE/n$i"
		--service "web=${backends[i - 1]}")
	[ "$i" -gt 1 ] && args+=(--join "$HOST:$DEMO_GOSSIP_PORT")
	spawn "ringman-n$i" "$STATE/logs/ringman-n$i.log" "$RINGMAN" "${args[@]}"
done

# nginx/lua.conf rendered into its own prefix, as test/nginx does.
PREFIX=$STATE/nginx
mkdir -p "$PREFIX/lua" "$PREFIX/logs" "$PREFIX/tmp"
cp nginx/ringman.lua "$PREFIX/lua/"
sed -e "s|@LISTEN@|$HOST:$DEMO_PORT|g" \
	-e "s|@RINGMAN_RESP@|$HOST:$DEMO_RESP_PORT|g" \
	-e "s|@RINGMAN_HTTP@|$HOST:$DEMO_HTTP_PORT|g" \
	nginx/lua.conf >"$PREFIX/nginx.conf"
if grep -q '@[A-Z_]*@' "$PREFIX/nginx.conf"; then
	die "unrendered placeholder in $PREFIX/nginx.conf: $(grep -o '@[A-Z_]*@' "$PREFIX/nginx.conf" | sort -u | tr '\n' ' ')"
fi

# wait_for WHAT CMD...: poll CMD every 100 ms until it succeeds or the start
# deadline passes; fail early when a started process has died.
deadline=$((SECONDS + START_TIMEOUT))
wait_for() {
	local what=$1
	shift
	until "$@" >/dev/null 2>&1; do
		local name pid
		while read -r name pid; do
			[ "$name" = script ] && continue
			kill -0 "$pid" 2>/dev/null || die "$name exited during start; see $DEMO_DIR/logs/$name.log"
		done <"$PIDS"
		[ $SECONDS -lt $deadline ] || die "timed out after ${START_TIMEOUT}s waiting for $what; logs in $DEMO_DIR/logs/"
		sleep 0.1
	done
}

# Every node's ring of `web` holds the three backends.
ring_complete() {
	local i body b
	for i in $(seq 1 $NODES); do
		body=$(curl -fsS --max-time 1 "http://$HOST:$((DEMO_HTTP_PORT + i - 1))/v1/rings") || return 1
		for b in "${backends[@]}"; do [[ $body == *"\"$b\""* ]] || return 1; done
	done
}
log "waiting for the three nodes to agree on the ring"
wait_for "every node's ring to list ${backends[*]}" ring_complete

spawn nginx "$STATE/logs/nginx.log" "$NGINX" -p "$PREFIX/" -c "$PREFIX/nginx.conf" -e stderr -g 'daemon off;'
URL=http://$HOST:$DEMO_PORT
log "waiting for nginx on $HOST:$DEMO_PORT"
wait_for "nginx to answer on $URL" curl -fsS --max-time 1 "$URL/ready-check"

cat <<EOF

ringman demo is up (state, logs and data in $DEMO_DIR/):
  nginx      $URL   (nginx/lua.conf, asks node n1 over RESP at $HOST:$DEMO_RESP_PORT)
  backends   ${backends[*]}   (b1 b2 b3: answer "name path")
  ringman    n1..n3  RESP $HOST:$DEMO_RESP_PORT-$((DEMO_RESP_PORT + NODES - 1)), HTTP $HOST:$DEMO_HTTP_PORT-$((DEMO_HTTP_PORT + NODES - 1))

Try:
  curl $URL/some/url
  curl -H 'Host: shop.example' $URL/cart
  curl 'http://$HOST:$DEMO_HTTP_PORT/v1/lookup?key=$HOST/some/url&n=3'   # key is \$host\$uri
  ./bin/ringman members --addr $HOST:$DEMO_HTTP_PORT

Different URLs land on different backends:
EOF
for path in /a /b /c /d /e /f /g /h; do
	printf '  $ curl %s%s\n  ' "$URL" "$path"
	curl -fsS --max-time 2 "$URL$path"
done
echo
echo "The same URL lands on the same backend, every time:"
for _ in 1 2 3; do
	printf '  $ curl %s/some/url\n  ' "$URL"
	curl -fsS --max-time 2 "$URL/some/url"
done
cat <<EOF

Running. Ctrl-C here, or \`make demo-stop\` in another terminal, stops it all.
EOF

# Wait until a signal, or until one of the processes exits (e.g. make demo-stop).
while :; do
	while read -r name pid; do
		[ "$name" = script ] && continue
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name (pid $pid) exited; stopping the demo"
			exit 1
		fi
	done <"$PIDS"
	sleep 1 &
	wait $! || true
done
