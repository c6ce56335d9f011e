#!/usr/bin/env bash
# Load comparison: darklight (every feature on) against a plain Pingora passthrough and nginx as
# a reverse proxy, all in front of the same cheap origin on 127.0.0.1, driven by wrk in
# alternating rounds. Started by `make bench-load`; `make bench-features` adds darklight with each
# feature off in turn, to price every feature. Every run is bounded in time.
#
# Environment (defaults in brackets):
#   DURATION [10]     seconds per wrk run          ROUNDS [3]   rounds over the proxies
#   CONNECTIONS [50]  wrk connections              WRK_THREADS [1]
#   WARMUP [2]        seconds of warm-up per proxy before the first round
#   PROXY_THREADS [1] worker threads of each proxy (nginx: worker_processes)
#   PROXY_CPUS [1]    CPUs the proxies are pinned to (taskset -c list)
#   LOAD_CPUS [0]     CPUs of wrk, the origin and the OTLP sink
#   ACCESS_LOG [0]    1: access log on in darklight and nginx (both to a file), 0: off in both
#   SOAK [0]          seconds of the memory soak (darklight under load, RSS every 10 s); 0: none
#   BASE_PORT [18080] ports BASE_PORT..BASE_PORT+5 on 127.0.0.1 are used, and one more from
#                     BASE_PORT+6 on for each darklight variant in TARGETS
#   TARGETS ["darklight plain nginx"]  which proxies to measure; besides these three, darklight
#                     variants, each a darklight process of its own measured in the same
#                     rounds: darklight-off (every feature off) and darklight-no-telemetry,
#                     darklight-no-cookies, darklight-no-correlation, darklight-no-attribution
#                     (every feature on but that one; attribution off also means no cookies).
#                     With darklight and plain, the variants give what each feature costs a
#                     request, in CPU time, in one run (`make bench-features`)
#   DL_TELEMETRY, DL_COOKIES, DL_CORRELATION, DL_ATTRIBUTION [1]: 0 turns that feature off in
#                     the `darklight` target (the comparison itself keeps all on)
#   DL_BATCH [512]    darklight's telemetry.batch.max_export_batch_size
#   DL_SAMPLER [always_on]: darklight's sampler; always_off keeps trace propagation but records
#                     and exports no span
#   PLAIN_EXTRA_HEADERS [0], PLAIN_TIMEOUTS [0]: give plain Pingora one piece of darklight's
#                     work (N custom upstream headers; 1: darklight's upstream timeouts), to see
#                     what Pingora charges for it (examples/plain_pingora.rs)
#   RATE [0]          about this many requests/s in all: each connection pauses
#                     1000 x CONNECTIONS / RATE ms before each request, so the rate reached is
#                     a little lower (the pause plus the response time); 0: as fast as the
#                     proxy answers. Below every proxy's capacity, the
#                     latency columns compare what each proxy adds at the same load, where at
#                     full speed they mostly restate the throughput
#   INSTRUCTIONS [0]  1: instead of timed rounds, run darklight and plain Pingora under valgrind's
#                     callgrind and count the instructions each executes per request over
#                     DURATION seconds of the same mix (`make bench-instructions`). The count does
#                     not depend on what else runs on the machine, so it compares the proxies'
#                     user-space work exactly; kernel time (sockets) is not in it. Under valgrind,
#                     SHA-256 takes its portable path, so the cookie signatures count more than
#                     they cost on CPUs with SHA extensions.
#   CALLGRIND_DIR []  with INSTRUCTIONS=1: keep the callgrind profiles there, for callgrind_annotate
#   CACHE_SIM [0]     with INSTRUCTIONS=1: also simulate the caches (32 KiB L1 for code and data,
#                     a 1 MiB last level standing for one core's L2) and count their misses per
#                     request: the memory traffic the instruction count leaves out, as exactly
#                     (the simulation is slower, so fewer requests complete)
#   PROFILE [0]       1: instead of timed rounds, sample each proxy's CPU with perf (cpu-clock on
#                     PROXY_CPUS) over DURATION seconds of the mix, and print where its CPU time
#                     goes per request: kernel, the proxy's own code, Pingora, tokio, header maps,
#                     allocator, libc, the rest (`make bench-profile`). perf's own sampling slows
#                     every proxy, so compare the rows, not the totals with a timed run.
#   PERF_DIR []       with PROFILE=1: keep the perf data there, for perf report
#
# CPU placement on a 2-core machine: the three proxies run one at a time on PROXY_CPUS (CPU 1),
# the load generator, the origin and the span sink share LOAD_CPUS (CPU 0). The proxy is the
# only thing on its CPU, so requests/s measures its cost; the load side is the same for all
# three. The sink stands in for a collector on another machine: it counts spans without decoding
# them, and runs at SCHED_IDLE (when chrt allows it), so it uses CPU 0 only when wrk and the
# origin leave it idle and does not delay their requests. It is idle unless darklight exports.
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
WRK_THREADS=${WRK_THREADS:-1}
WARMUP=${WARMUP:-2}
PROXY_THREADS=${PROXY_THREADS:-1}
PROXY_CPUS=${PROXY_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
ACCESS_LOG=${ACCESS_LOG:-0}
SOAK=${SOAK:-0}
BASE_PORT=${BASE_PORT:-18080}
TARGETS=${TARGETS:-darklight plain nginx}
INSTRUCTIONS=${INSTRUCTIONS:-0}
CACHE_SIM=${CACHE_SIM:-0}
PROFILE=${PROFILE:-0}
RATE=${RATE:-0}
# wrk paces each connection by a whole number of milliseconds between requests (mix.lua).
export WRK_DELAY_MS=0
if [ "$RATE" -gt 0 ]; then
    WRK_DELAY_MS=$((1000 * CONNECTIONS / RATE))
    [ "$WRK_DELAY_MS" -ge 1 ] || { echo "compare.sh: RATE $RATE is above 1000 x CONNECTIONS ($CONNECTIONS)" >&2; exit 1; }
fi
if [ "$INSTRUCTIONS" = 1 ]; then
    # nginx forks its workers, which callgrind would have to follow: only the two Pingora proxies.
    TARGETS=$(echo "$TARGETS" | tr ' ' '\n' | grep -v '^nginx$' | paste -sd' ')
    ROUNDS=0
    SOAK=0
fi
if [ "$PROFILE" = 1 ]; then
    [ "$INSTRUCTIONS" = 1 ] && { echo "compare.sh: PROFILE=1 and INSTRUCTIONS=1 are separate runs" >&2; exit 1; }
    ROUNDS=0
    SOAK=0
fi

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/benches/load"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOOLS="$TARGET_DIR/load-tools"
RUN=$(mktemp -d "${TMPDIR:-/tmp}/darklight-load.XXXXXX")

ORIGIN_PORT=$BASE_PORT
DARKLIGHT_PORT=$((BASE_PORT + 1))
PLAIN_PORT=$((BASE_PORT + 2))
NGINX_PORT=$((BASE_PORT + 3))
SINK_PORT=$((BASE_PORT + 4))

log() { printf '%s\n' "$*" >&2; }
die() { log "compare.sh: $*"; exit 1; }

# The features of a darklight target, as "telemetry cookies correlation attribution", each 1
# (on) or 0 (off); fails for a target that is not darklight's.
features_of() {
    case $1 in
        darklight) echo "${DL_TELEMETRY:-1} ${DL_COOKIES:-1} ${DL_CORRELATION:-1} ${DL_ATTRIBUTION:-1}" ;;
        darklight-off) echo "0 0 0 0" ;;
        darklight-no-telemetry) echo "0 1 1 1" ;;
        darklight-no-cookies) echo "1 0 1 1" ;;
        darklight-no-correlation) echo "1 1 0 1" ;;
        darklight-no-attribution) echo "1 1 1 0" ;;
        *) return 1 ;;
    esac
}

# Every target is known, and each darklight variant gets a port of its own.
declare -A DL_PORTS=([darklight]=$DARKLIGHT_PORT)
declare -A DL_PIDS=()
VARIANTS=()
for target in $TARGETS; do
    case $target in
        darklight | plain | nginx) ;;
        darklight-*)
            features_of "$target" >/dev/null \
                || die "unknown target $target (darklight variants: darklight-off, darklight-no-telemetry, darklight-no-cookies, darklight-no-correlation, darklight-no-attribution)"
            [ -z "${DL_PORTS[$target]:-}" ] || die "target $target is listed twice"
            DL_PORTS[$target]=$((BASE_PORT + 6 + ${#VARIANTS[@]}))
            VARIANTS+=("$target") ;;
        *) die "unknown target $target (darklight, plain, nginx, or a darklight variant)" ;;
    esac
done

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools: nginx and wrk from Debian packages when missing -------------------------------------
# apt-get install first; when that is impossible (no root, a broken dpkg state), the packages are
# downloaded with apt-get and unpacked under target/load-tools without touching the system.
NGINX=$(command -v nginx || true)
WRK=$(command -v wrk || true)
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
[ -z "$NGINX" ] && [ -x "$TOOLS/root/usr/sbin/nginx" ] && NGINX="$TOOLS/root/usr/sbin/nginx"
[ -z "$WRK" ] && [ -x "$TOOLS/root/usr/bin/wrk" ] && WRK="$TOOLS/root/usr/bin/wrk"
if [ -z "$NGINX" ] || [ -z "$WRK" ]; then
    command -v apt-get >/dev/null || die "nginx and wrk are needed (no apt-get to install them)"
    SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
    log "installing nginx and wrk with apt-get"
    if $SUDO apt-get install -y -qq nginx wrk >"$RUN/apt.log" 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq nginx wrk >"$RUN/apt.log" 2>&1; }; then
        NGINX=$(command -v nginx || echo /usr/sbin/nginx)
        WRK=$(command -v wrk)
    else
        log "apt-get install failed ($(tail -1 "$RUN/apt.log")); unpacking the packages under $TOOLS"
        mkdir -p "$TOOLS/debs" "$TOOLS/root"
        (cd "$TOOLS/debs" && apt-get download nginx nginx-common wrk libluajit-5.1-2 libluajit-5.1-common >"$RUN/apt.log" 2>&1) \
            || die "apt-get download failed: $(tail -1 "$RUN/apt.log")"
        for deb in "$TOOLS"/debs/*.deb; do dpkg-deb -x "$deb" "$TOOLS/root"; done
        NGINX="$TOOLS/root/usr/sbin/nginx"
        WRK="$TOOLS/root/usr/bin/wrk"
    fi
fi
export LD_LIBRARY_PATH="$TOOLS/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$NGINX" -v 2>/dev/null || die "nginx does not run: $NGINX"
{ "$WRK" -v 2>&1 || true; } | grep -q wrk || die "wrk does not run: $WRK"
command -v taskset >/dev/null || die "taskset (util-linux) is needed"
if [ "$PROFILE" = 1 ]; then
    if ! perf --version >/dev/null 2>&1; then
        SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
        log "installing perf with apt-get"
        $SUDO apt-get install -y -qq linux-perf >"$RUN/apt.log" 2>&1 \
            || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq linux-perf >"$RUN/apt.log" 2>&1; } \
            || die "perf is needed for PROFILE=1: $(tail -1 "$RUN/apt.log")"
        perf --version >/dev/null 2>&1 || die "perf does not run for this kernel ($(uname -r))"
    fi
    perf record -q -e cpu-clock -C "$PROXY_CPUS" -o "$RUN/perf.check" -- sleep 0.1 >"$RUN/perf.check.log" 2>&1 \
        || die "perf cannot sample CPU $PROXY_CPUS (root, or kernel.perf_event_paranoid <= 0, is needed): $(tail -1 "$RUN/perf.check.log")"
fi
WRAP=()
if [ "$INSTRUCTIONS" = 1 ]; then
    if ! command -v callgrind_control >/dev/null; then
        log "installing valgrind with apt-get"
        SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
        $SUDO apt-get install -y -qq valgrind >"$RUN/apt.log" 2>&1 \
            || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq valgrind >"$RUN/apt.log" 2>&1; } \
            || die "valgrind is needed for INSTRUCTIONS=1: $(tail -1 "$RUN/apt.log")"
    fi
    WRAP=(valgrind --tool=callgrind "--callgrind-out-file=$RUN/callgrind.%p")
    [ "$CACHE_SIM" != 1 ] || WRAP+=(--cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,16,64)
fi

# --- build ----------------------------------------------------------------------------------------
log "building darklight and the comparison examples (release)"
(cd "$ROOT" && cargo build --release --quiet --bin darklight --example plain_pingora --example otlp_sink)
DARKLIGHT="$TARGET_DIR/release/darklight"
PLAIN="$TARGET_DIR/release/examples/plain_pingora"
SINK="$TARGET_DIR/release/examples/otlp_sink"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
    for _ in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    die "nothing listens on 127.0.0.1:$1 after 30 s (logs in $RUN)"
}
for port in $ORIGIN_PORT $PLAIN_PORT $NGINX_PORT $SINK_PORT "${DL_PORTS[@]}"; do
    port_free "$port" || die "127.0.0.1:$port is in use; set BASE_PORT"
done

# --- origin: nginx `return 200`, on the load CPUs -------------------------------------------------
NGINX_USER=$([ "$(id -u)" -eq 0 ] && echo "user root;" || true)
nginx_common() {
    cat <<EOF
$NGINX_USER
daemon off;
pid $RUN/$1.pid;
error_log $RUN/$1.error.log warn;
worker_processes $2;
events { worker_connections 4096; }
http {
    client_body_temp_path $RUN/$1-body;
    proxy_temp_path $RUN/$1-proxy;
    fastcgi_temp_path $RUN/$1-fastcgi;
    uwsgi_temp_path $RUN/$1-uwsgi;
    scgi_temp_path $RUN/$1-scgi;
    keepalive_requests 1000000;
EOF
}
{
    nginx_common origin 1
    cat <<EOF
    access_log off;
    server {
        listen 127.0.0.1:$ORIGIN_PORT reuseport;
        location / {
            default_type text/html;
            return 200 '<!doctype html><title>news</title><p>A small page from the origin.</p>\n';
        }
    }
}
EOF
} >"$RUN/origin.conf"
taskset -c "$LOAD_CPUS" "$NGINX" -e "$RUN/origin.error.log" -p "$RUN" -c "$RUN/origin.conf" &
PIDS+=($!)

# --- OTLP sink on the load CPUs, below wrk and the origin ----------------------------------------
SINK_SCHED=()
command -v chrt >/dev/null && chrt -i 0 true 2>/dev/null && SINK_SCHED=(chrt -i 0)
taskset -c "$LOAD_CPUS" ${SINK_SCHED[@]+"${SINK_SCHED[@]}"} "$SINK" "127.0.0.1:$SINK_PORT" "$RUN/spans" &
PIDS+=($!)

# --- darklight: classification, headers, signed cookies, preview correlation, spans -------------
if [ "$ACCESS_LOG" = 1 ]; then DL_ACCESS=true; NGINX_ACCESS="access_log $RUN/nginx.access.log;"; else DL_ACCESS=false; NGINX_ACCESS="access_log off;"; fi
export LOAD_COOKIE_SECRET=0123456789abcdef0123456789abcdef-load-test
# on/off as YAML.
yaml_bool() { [ "$1" = 1 ] && echo true || echo false; }
start_darklight() { # target: its configuration in $RUN/TARGET.yaml, its log in $RUN/TARGET.log
    local target=$1 telemetry cookies correlation attribution
    read -r telemetry cookies correlation attribution <<<"$(features_of "$target")"
    cat >"$RUN/$target.yaml" <<EOF
listen: [127.0.0.1:${DL_PORTS[$target]}]
server: {threads: $PROXY_THREADS, grace_period: 1s, shutdown_timeout: 1s}
log: {level: warn, access_log: $DL_ACCESS}
sites:
  - name: news
    hosts: [news.example.com]
    default: true
    upstreams: [http://127.0.0.1:$ORIGIN_PORT]
    routes:
      - /
      - {path: '/articles/**', name: '/articles/{slug}'}
attribution:
  enabled: $(yaml_bool "$attribution")
  cookies: {secret_env: $([ "$cookies" = 1 ] && echo LOAD_COOKIE_SECRET || echo LOAD_NO_SECRET)}
correlation: {enabled: $(yaml_bool "$correlation")}
telemetry:
  enabled: $(yaml_bool "$telemetry")
  exporter: otlp
  otlp: {protocol: grpc, endpoint: 'http://127.0.0.1:$SINK_PORT', timeout: 5s}
  sampler: ${DL_SAMPLER:-always_on}
  batch: {scheduled_delay: 1s, max_export_batch_size: ${DL_BATCH:-512}}
EOF
    "$DARKLIGHT" check --config "$RUN/$target.yaml" >/dev/null
    env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT -u OTEL_TRACES_EXPORTER \
        RUST_LOG=warn taskset -c "$PROXY_CPUS" ${WRAP[@]+"${WRAP[@]}"} "$DARKLIGHT" run --config "$RUN/$target.yaml" \
        2>"$RUN/$target.log" &
    DL_PIDS[$target]=$!
    PIDS+=($!)
}
# darklight always runs: it mints the returning visitor's cookies and carries the soak.
start_darklight darklight
DARKLIGHT_PID=${DL_PIDS[darklight]}
for target in ${VARIANTS[@]+"${VARIANTS[@]}"}; do start_darklight "$target"; done

# --- plain Pingora --------------------------------------------------------------------------------
taskset -c "$PROXY_CPUS" ${WRAP[@]+"${WRAP[@]}"} "$PLAIN" "127.0.0.1:$PLAIN_PORT" "127.0.0.1:$ORIGIN_PORT" "$PROXY_THREADS" \
    2>"$RUN/plain.log" &
PLAIN_PID=$!
PIDS+=($PLAIN_PID)

# --- nginx as a reverse proxy: same worker count, upstream keepalive ------------------------------
{
    nginx_common proxy "$PROXY_THREADS"
    cat <<EOF
    $NGINX_ACCESS
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
} >"$RUN/proxy.conf"
taskset -c "$PROXY_CPUS" "$NGINX" -e "$RUN/proxy.error.log" -p "$RUN" -c "$RUN/proxy.conf" &
NGINX_PID=$!
PIDS+=($NGINX_PID)

for port in $ORIGIN_PORT $SINK_PORT $PLAIN_PORT $NGINX_PORT "${DL_PORTS[@]}"; do wait_port "$port"; done

# A returning visitor's signed cookies, minted by darklight itself.
export DL_COOKIE
DL_COOKIE=$(curl -s -m 5 -o /dev/null -D - -H 'Host: news.example.com' \
    -A 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36' \
    "http://127.0.0.1:$DARKLIGHT_PORT/articles/2026/09/why-nobody-sees-dark-social" \
    | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\);.*/\1/p' | paste -sd';' | sed 's/;/; /g')
read -r _ dl_cookies _ dl_attribution <<<"$(features_of darklight)"
[ -n "$DL_COOKIE" ] || [ "$dl_cookies" != 1 ] || [ "$dl_attribution" != 1 ] || die "darklight set no cookie (logs: $(tail -3 "$RUN/darklight.log"))"

port_of() { case $1 in darklight*) echo "${DL_PORTS[$1]}" ;; plain) echo "$PLAIN_PORT" ;; nginx) echo "$NGINX_PORT" ;; esac; }
pid_of() { case $1 in darklight*) echo "${DL_PIDS[$1]}" ;; plain) echo "$PLAIN_PID" ;; nginx) echo "$NGINX_PID" ;; esac; }
NGINX_LABEL="nginx $("$NGINX" -v 2>&1 | sed 's|.*/||')"
label_of() {
    case $1 in
        darklight) if [ "$(features_of darklight)" = "1 1 1 1" ]; then
                echo "darklight (all features)"; else echo "darklight (features off)"; fi ;;
        darklight-off) echo "darklight, every feature off" ;;
        darklight-no-*) echo "darklight, ${1#darklight-no-} off" ;;
        plain) echo "plain Pingora 0.9" ;;
        nginx) echo "$NGINX_LABEL" ;;
    esac
}
# The tables' first column fits the longest label.
LABEL_W=24
for target in $TARGETS; do
    label=$(label_of "$target")
    [ "${#label}" -le "$LABEL_W" ] || LABEL_W=${#label}
done
LABEL_RULE=$(printf '%*s' $((LABEL_W + 2)) '' | tr ' ' '-')
# The process and its children (nginx's workers).
tree_of() { echo "$1"; pgrep -P "$1" || true; }
# CPU time (clock ticks) used so far by a process tree.
cpu_ticks() { # pid [fields] -> clock ticks (user + system by default)
    local total=0 pid
    for pid in $(tree_of "$1"); do
        total=$((total + $(awk "{print ${2:-\$14 + \$15}}" "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
# Peak resident memory (kB) of a process tree: the sum of each process's VmHWM.
peak_rss_kb() {
    local total=0 pid
    for pid in $(tree_of "$1"); do
        total=$((total + $(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# Wake-ups sent to the load CPUs so far: the function-call and rescheduling interrupts (CAL,
# RES) they received. A proxy that wakes wrk or the origin while their CPU sleeps pays for that
# interrupt on its own CPU, and in a virtual machine each one costs a trip through the
# hypervisor. -1 where /proc/interrupts has no such lines (not x86).
wakeup_ipis() {
    awk -v list="$LOAD_CPUS" '
        NR == 1 {
            for (i = 1; i <= NF; i++) col[$i] = i + 1
            n = split(list, parts, ",")
            for (j = 1; j <= n; j++) {
                if (split(parts[j], r, "-") == 2) { for (c = r[1]; c <= r[2]; c++) want["CPU" c] = 1 }
                else want["CPU" parts[j]] = 1
            }
            next
        }
        $1 == "CAL:" || $1 == "RES:" { found = 1; for (c in want) if (c in col) sum += $(col[c]) }
        END { print found ? sum : -1 }' /proc/interrupts 2>/dev/null || echo -1
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

WRK_WRAP=() # a command wrk runs under (perf record, for PROFILE=1)
run_wrk() { # target seconds -> "requests rps p50_us p99_us errors"
    timeout $(($2 + 30)) ${WRK_WRAP[@]+"${WRK_WRAP[@]}"} taskset -c "$LOAD_CPUS" "$WRK" -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${2}s" \
        --timeout 5s -s "$HERE/mix.lua" "http://127.0.0.1:$(port_of "$1")/" 2>&1 \
        | awk '/^RESULT/ {print $2, $3, $4, $5, $6}'
}

# --- rounds ---------------------------------------------------------------------------------------
RESULTS="$RUN/results"
: >"$RESULTS"
if [ "$ROUNDS" -gt 0 ]; then
    log "warm-up: ${WARMUP}s per proxy"
    for target in $TARGETS; do run_wrk "$target" "$WARMUP" >/dev/null; done
    log "measuring: $ROUNDS rounds x {$TARGETS}, ${DURATION}s each, $CONNECTIONS connections, $WRK_THREADS wrk thread(s)"
    for round in $(seq "$ROUNDS"); do
        # Alternate the order each round so no proxy always follows the same one.
        order=$TARGETS
        [ $((round % 2)) -eq 0 ] && order=$(echo "$TARGETS" | tr ' ' '\n' | tac | paste -sd' ')
        for target in $order; do
            pid=$(pid_of "$target")
            before=$(cpu_ticks "$pid") user_before=$(cpu_ticks "$pid" '$14') ipis_before=$(wakeup_ipis)
            result=$(run_wrk "$target" "$DURATION")
            after=$(cpu_ticks "$pid") user_after=$(cpu_ticks "$pid" '$14') ipis_after=$(wakeup_ipis)
            [ -n "$result" ] || die "wrk gave no result for $target"
            set -- $result
            cpu_us=$(awk -v t=$((after - before)) -v u="$TICK_US" -v n="$1" 'BEGIN { printf "%.1f", n ? t * u / n : 0 }')
            user_us=$(awk -v t=$((user_after - user_before)) -v u="$TICK_US" -v n="$1" 'BEGIN { printf "%.1f", n ? t * u / n : 0 }')
            ipis=$(awk -v a="$ipis_before" -v b="$ipis_after" -v n="$1" 'BEGIN { if (a < 0 || !n) print -1; else printf "%.3f", (b - a) / n }')
            echo "$target $round $2 $3 $4 $5 $cpu_us $user_us $ipis" >>"$RESULTS"
            log "  round $round  $(printf '%-9s' "$target") $(printf '%9.0f' "$2") req/s  p50 ${3}us  p99 ${4}us  errors $5  cpu ${cpu_us}us/req (user ${user_us})  wake-ups ${ipis}/req"
        done
    done

    median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
    col() { awk -v t="$1" -v c="$2" '$1 == t {print $c}' "$RESULTS" | median; }
    echo
    pace="as fast as each proxy answers"
    [ "$RATE" -gt 0 ] && pace="each connection pausing ${WRK_DELAY_MS} ms between requests (RATE $RATE)"
    echo "darklight load comparison: $ROUNDS rounds x ${DURATION}s, wrk -t$WRK_THREADS -c$CONNECTIONS, $pace, proxies on CPU $PROXY_CPUS ($PROXY_THREADS thread(s)), load on CPU $LOAD_CPUS; medians over rounds"
    echo
    printf "| %-${LABEL_W}s | %10s | %8s | %8s | %11s | %13s | %6s |\n" proxy "requests/s" "p50 ms" "p99 ms" "CPU us/req" "peak RSS MiB" errors
    echo "|$LABEL_RULE|-----------:|---------:|---------:|------------:|--------------:|-------:|"
    for target in $TARGETS; do
        printf "| %-${LABEL_W}s | %10.0f | %8.2f | %8.2f | %11.1f | %13.1f | %6d |\n" "$(label_of "$target")" \
            "$(col "$target" 3)" "$(awk -v v="$(col "$target" 4)" 'BEGIN {print v / 1000}')" \
            "$(awk -v v="$(col "$target" 5)" 'BEGIN {print v / 1000}')" "$(col "$target" 7)" \
            "$(awk -v v="$(peak_rss_kb "$(pid_of "$target")")" 'BEGIN {print v / 1024}')" \
            "$(awk -v t="$target" '$1 == t {s += $6} END {print s + 0}' "$RESULTS")"
    done
    echo
    if [ "$(awk '$9 < 0 {print "none"; exit}' "$RESULTS")" != none ]; then
        wakeups=""
        for target in $TARGETS; do wakeups="$wakeups, $target $(col "$target" 9)"; done
        echo "wake-up interrupts received by CPU $LOAD_CPUS (wrk, origin) per request, medians:${wakeups#,}"
        echo
    fi
    ratio() { awk -v a="$(col "$1" "$3")" -v b="$(col "$2" "$3")" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
    case " $TARGETS " in *" darklight "*)
        case " $TARGETS " in *" plain "*)
            echo "darklight / plain Pingora: throughput $(ratio darklight plain 3), p50 $(ratio darklight plain 4), p99 $(ratio darklight plain 5), CPU per request $(ratio darklight plain 7)"
            for target in ${VARIANTS[@]+"${VARIANTS[@]}"}; do
                echo "$(label_of "$target") / plain Pingora: throughput $(ratio "$target" plain 3), p99 $(ratio "$target" plain 5), CPU per request $(ratio "$target" plain 7)"
            done ;;
        esac
        case " $TARGETS " in *" nginx "*)
            echo "darklight / nginx:         throughput $(ratio darklight nginx 3), p50 $(ratio darklight nginx 4), p99 $(ratio darklight nginx 5), CPU per request $(ratio darklight nginx 7)" ;;
        esac
        if [ "${#VARIANTS[@]}" -gt 0 ]; then
            # CPU per request of `a` less that of `b`, round by round: "median lowest highest".
            cpu_gap() {
                local gaps
                gaps=$(awk -v a="$1" -v b="$2" '$1 == a {x[$2] = $7} $1 == b {y[$2] = $7}
                    END { for (r in x) if (r in y) printf "%.1f\n", x[r] - y[r] }' "$RESULTS" | sort -n)
                echo "$(median <<<"$gaps") $(head -1 <<<"$gaps") $(tail -1 <<<"$gaps")"
            }
            echo
            echo "What darklight's work costs, in CPU us a request: darklight less the variant without that work, round by round (median, and the lowest and highest round):"
            for target in "${VARIANTS[@]}"; do
                case $target in
                    darklight-off) what="every feature" ;;
                    darklight-no-attribution) what="attribution (its headers and cookies)" ;;
                    *) what=${target#darklight-no-} ;;
                esac
                read -r gap low high <<<"$(cpu_gap darklight "$target")"
                printf '  %-52s %6s us  (rounds %s to %s)\n' "$what" "$gap" "$low" "$high"
            done
            case " $TARGETS " in *" darklight-off "*)
                case " $TARGETS " in *" plain "*)
                    read -r gap low high <<<"$(cpu_gap darklight-off plain)"
                    printf '  %-52s %6s us  (rounds %s to %s)\n' "the proxy around them (every feature off less plain)" "$gap" "$low" "$high" ;;
                esac ;;
            esac
        fi
        sleep 2 # the last batch of spans
        echo "spans received by the OTLP sink (from every darklight target): $(cat "$RUN/spans" 2>/dev/null || echo 0); telemetry warnings (dropped or lost spans): $(grep -c 'darklight::telemetry' "$RUN/darklight.log" || true)"
        # The warnings are rate-limited; each carries the running total, so the last is a floor.
        last_total() { grep -oE "$1[\"=:]+[0-9]+" "$RUN/darklight.log" | tail -1 | grep -oE '[0-9]+$' || echo 0; }
        echo "spans darklight reported, at least: dropped at its full queue $(last_total dropped_spans), lost in failed exports $(last_total lost_spans)"
        ;;
    esac
fi

# --- instructions per request (callgrind) --------------------------------------------------------
if [ "$INSTRUCTIONS" = 1 ]; then
    log "warm-up: ${WARMUP}s per proxy"
    for target in $TARGETS; do run_wrk "$target" "$WARMUP" >/dev/null; done
    log "counting instructions: {$TARGETS}, ${DURATION}s each under callgrind"
    echo
    echo "darklight instruction count: ${DURATION}s of the request mix per proxy under callgrind, wrk -t$WRK_THREADS -c$CONNECTIONS; every thread of the proxy counted"
    echo
    if [ "$CACHE_SIM" = 1 ]; then
        printf "| %-${LABEL_W}s | %9s | %20s | %16s | %16s |\n" proxy requests "instructions/request" "L1 misses/req" "LL misses/req"
        echo "|$LABEL_RULE|----------:|---------------------:|-----------------:|-----------------:|"
    else
        printf "| %-${LABEL_W}s | %9s | %20s |\n" proxy requests "instructions/request"
        echo "|$LABEL_RULE|----------:|---------------------:|"
    fi
    for target in $TARGETS; do
        pid=$(pid_of "$target")
        callgrind_control -z "$pid" >/dev/null 2>&1 || die "callgrind_control could not reach $target"
        result=$(run_wrk "$target" "$DURATION")
        callgrind_control -d "$pid" >/dev/null 2>&1 || die "callgrind_control could not reach $target"
        [ -n "$result" ] || die "wrk gave no result for $target"
        set -- $result
        [ "$1" -gt 0 ] || die "no request completed through $target"
        dump=$(ls -t "$RUN/callgrind.$pid".* | head -1)
        total=$(awk '/^summary:/ {print $2}' "$dump")
        [ -z "${CALLGRIND_DIR:-}" ] || { mkdir -p "$CALLGRIND_DIR" && cp "$dump" "$CALLGRIND_DIR/callgrind.$target"; }
        # With CACHE_SIM, the misses of code and data reads and data writes per request, summed
        # per level (events I1mr D1mr D1mw and ILmr DLmr DLmw in the profile's header).
        misses=
        [ "$CACHE_SIM" != 1 ] || misses=$(awk -v n="$1" '/^events:/ { for (i = 2; i <= NF; i++) name[i] = $i }
            /^summary:/ { for (i = 2; i <= NF; i++) { if (name[i] ~ /^[ID]1m/) l1 += $i; if (name[i] ~ /^[ID]Lm/) ll += $i }
                          printf "%.1f %.1f", l1 / n, ll / n }' "$dump")
        echo "$target $1 $((total / $1)) $dump $misses" >>"$RESULTS"
        if [ -n "$misses" ]; then
            # shellcheck disable=SC2086 # the two counts, one column each
            printf "| %-${LABEL_W}s | %9d | %20d | %16s | %16s |\n" "$(label_of "$target")" "$1" "$((total / $1))" $misses
        else
            printf "| %-${LABEL_W}s | %9d | %20d |\n" "$(label_of "$target")" "$1" "$((total / $1))"
        fi
    done
    echo
    per_request() { awk -v t="$1" '$1 == t {print $3}' "$RESULTS"; }
    if [ -n "$(per_request darklight)" ] && [ -n "$(per_request plain)" ]; then
        echo "darklight / plain Pingora: instructions per request $(awk -v a="$(per_request darklight)" -v b="$(per_request plain)" 'BEGIN { printf "%.3f", a / b }')"
        if [ "$CACHE_SIM" = 1 ]; then
            misses_of() { awk -v t="$1" -v c="$2" '$1 == t {print $c}' "$RESULTS"; }
            echo "darklight / plain Pingora: L1 misses per request $(awk -v a="$(misses_of darklight 5)" -v b="$(misses_of plain 5)" 'BEGIN { printf "%.3f", a / b }'), LL misses per request $(awk -v a="$(misses_of darklight 6)" -v b="$(misses_of plain 6)" 'BEGIN { printf "%.3f", a / b }')"
        fi
        echo
    fi
    case " $TARGETS " in *" darklight "*)
        requests=$(awk '$1 == "darklight" {print $2}' "$RESULTS")
        echo "darklight's own functions, instructions per request including what they call (top 15):"
        callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$(awk '$1 == "darklight" {print $4}' "$RESULTS")" 2>/dev/null \
            | grep -F "$ROOT/src/" | grep 'darklight::' | sed 's/,//g' \
            | awk -v n="$requests" '{ name = $0; sub(/^.*\.rs:/, "", name); sub(/ \[.*$/, "", name) }
                                    !seen[name]++ && shown++ < 15 { printf "  %8d  %s\n", $1 / n, name }' ;;
    esac
fi

# --- where the CPU time goes (perf) ---------------------------------------------------------------
if [ "$PROFILE" = 1 ]; then
    log "warm-up: ${WARMUP}s per proxy"
    for target in $TARGETS; do run_wrk "$target" "$WARMUP" >/dev/null; done
    log "profiling: {$TARGETS}, ${DURATION}s each, perf cpu-clock on CPU $PROXY_CPUS"
    for target in $TARGETS; do
        data="$RUN/perf.$target.data"
        # perf samples the proxies' CPUs for exactly as long as wrk runs.
        WRK_WRAP=(perf record -q -e cpu-clock -F 999 -C "$PROXY_CPUS" -o "$data" --)
        result=$(run_wrk "$target" "$DURATION")
        WRK_WRAP=()
        [ -n "$result" ] || die "wrk gave no result for $target"
        set -- $result
        [ "$1" -gt 0 ] || die "no request completed through $target"
        [ -z "${PERF_DIR:-}" ] || { mkdir -p "$PERF_DIR" && cp "$data" "$PERF_DIR/perf.$target.data"; }
        # Each sample's period is the CPU time it stands for (ns); the process's samples, put
        # in buckets by symbol, divided by the requests wrk counted.
        pids=$(tree_of "$(pid_of "$target")" | paste -sd,)
        perf report -i "$data" --pid "$pids" --stdio -F period,dso,sym --percent-limit 0 2>/dev/null \
            | awk -v t="$target" -v n="$1" '
                /^#/ || NF < 4 { next }
                {
                    ns = $1; dso = $2; sym = $0; sub(/^ *[0-9]+ +[^ ]+ +\[.\] /, "", sym)
                    if ($3 == "[k]") b = "kernel"
                    else if (sym ~ /darklight::|aho_corasick|regex_automata|sha2::|hmac::|base64::|plain_pingora::/ || dso ~ /^nginx/) b = "own"
                    else if (sym ~ /^_?mi_|^malloc|^free|^cfree|^_int_malloc|^_int_free|^__libc_malloc|^__libc_free/) b = "alloc"
                    else if (sym ~ /tonic::|h2::|hyper::|prost::|opentelemetry/) b = "export"
                    else if (sym ~ /http::header|httparse/) b = "headers"
                    else if (sym ~ /pingora/) b = "pingora"
                    else if (sym ~ /tokio::|mio::/) b = "tokio"
                    else if (dso ~ /^libc|vdso|^ld-linux/) b = "libc"
                    else b = "other"
                    sum[b] += ns; total += ns
                }
                END { for (b in sum) printf "%s %s %.2f\n", t, b, sum[b] / 1000 / n; printf "%s total %.2f\n", t, total / 1000 / n }' >>"$RESULTS"
        log "  $(printf '%-9s' "$target") $1 requests, $(awk -v t="$target" '$1 == t && $2 == "total" {print $3}' "$RESULTS") us/req sampled"
    done
    echo
    echo "darklight CPU profile: ${DURATION}s of the request mix per proxy, wrk -t$WRK_THREADS -c$CONNECTIONS, perf cpu-clock on CPU $PROXY_CPUS; CPU us per request, every thread of the proxy"
    echo
    header=$(printf '| %-44s' where) rule="|----------------------------------------------"
    for target in $TARGETS; do
        header="$header$(printf " | %${LABEL_W}s" "$(label_of "$target")")" rule="$rule|${LABEL_RULE%-}:"
    done
    echo "$header |"
    echo "$rule|"
    for bucket in kernel own pingora tokio headers alloc libc export other total; do
        case $bucket in
            kernel) label="kernel (sockets, scheduling, wake-ups)" ;;
            own) label="the proxy's own code" ;;
            pingora) label="Pingora" ;;
            tokio) label="tokio" ;;
            headers) label="http header maps, httparse" ;;
            alloc) label="allocator" ;;
            libc) label="libc (memcpy, clock)" ;;
            export) label="OTLP export (tonic, h2, hyper)" ;;
            other) label="the rest (std, bytes, ...)" ;;
            total) label="total" ;;
        esac
        row=$(printf "| %-44s" "$label")
        for target in $TARGETS; do
            row="$row$(printf " | %${LABEL_W}s" "$(awk -v t="$target" -v b="$bucket" '$1 == t && $2 == b {v = $3} END {printf "%.1f", v + 0}' "$RESULTS")")"
        done
        echo "$row |"
    done
    echo
    echo "The proxy's own code: darklight's functions with the Aho-Corasick, regex, SHA-256 and base64"
    echo "code they run; plain_pingora's; nginx's binary. perf's sampling slows every proxy."
fi

# --- memory soak ----------------------------------------------------------------------------------
if [ "$SOAK" -gt 0 ]; then
    echo
    echo "memory soak: darklight under load for ${SOAK}s, RSS every 10 s"
    timeout $((SOAK + 30)) taskset -c "$LOAD_CPUS" "$WRK" -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${SOAK}s" \
        --timeout 5s -s "$HERE/mix.lua" "http://127.0.0.1:$DARKLIGHT_PORT/" >"$RUN/soak.wrk" 2>&1 &
    SOAK_WRK=$!
    PIDS+=($SOAK_WRK)
    series=()
    for t in $(seq 0 10 "$SOAK"); do
        [ "$t" -gt 0 ] && sleep 10
        series+=("$t:$(rss_kb "$DARKLIGHT_PID")")
        printf '  t=%4ds  RSS %6.1f MiB\n' "$t" "$(awk -v v="${series[-1]#*:}" 'BEGIN {print v / 1024}')"
    done
    wait "$SOAK_WRK" || true
    echo "  wrk: $(awk '/^RESULT/ {printf "%d requests, %.0f req/s, %d errors", $2, $3, $6}' "$RUN/soak.wrk")"
    # Flat: from the first minute on (warm-up, pools and the preview table filling), the median
    # RSS of the last third of the samples is at most 2 % or 1 MiB (whichever is larger) above
    # the median of the first third. Medians, not single samples nor means: mimalloc hands freed
    # pages back, so a sample can dip or jump several MiB away from its neighbours, and one such
    # sample moves a third's mean by more than the allowance. A leak raises the level itself,
    # which the medians follow. The means are printed too.
    printf '%s\n' "${series[@]}" | awk -F: '
        function median(from, to,    i, j, k, v, m) {
            m = 0
            for (i = from; i <= to; i++) {
                v = r[i]; j = m
                while (j > 0 && s[j] > v) { s[j + 1] = s[j]; j-- }
                s[j + 1] = v; m++
            }
            k = int((m + 1) / 2)
            return (m % 2) ? s[k] : (s[k] + s[k + 1]) / 2
        }
        { t[NR] = $1; r[NR] = $2 }
        END {
            base = 0
            for (i = 1; i <= NR; i++) if (t[i] >= 60) { base = i; break }
            if (!base) { print "  too short to judge (need at least 60 s)"; exit }
            n = NR - base + 1; third = int(n / 3); if (third < 1) third = 1
            for (i = base; i < base + third; i++) first += r[i] / third
            for (i = NR - third + 1; i <= NR; i++) last += r[i] / third
            early = median(base, base + third - 1); late = median(NR - third + 1, NR)
            allowed = early * 0.02; if (allowed < 1024) allowed = 1024
            printf "  RSS median, first and last thirds from t=%ds: %.1f -> %.1f MiB (%+.1f MiB): %s\n",
                t[base], early / 1024, late / 1024, (late - early) / 1024,
                (late - early <= allowed) ? "flat" : "NOT flat"
            printf "  RSS mean, first and last thirds: %.1f -> %.1f MiB (%+.1f MiB)\n",
                first / 1024, last / 1024, (last - first) / 1024
            printf "  RSS at t=%ds and at the end: %.1f -> %.1f MiB\n", t[base], r[base] / 1024,
                r[NR] / 1024
            # Least-squares trend from t=60 s on.
            for (i = base; i <= NR; i++) { sx += t[i]; sy += r[i]; sxx += t[i] * t[i]; sxy += t[i] * r[i] }
            den = n * sxx - sx * sx
            if (den > 0) printf "  RSS trend from t=%ds (least squares): %+.2f MiB per minute\n", t[base],
                (n * sxy - sx * sy) / den * 60 / 1024
        }'
fi
