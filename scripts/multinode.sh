#!/usr/bin/env bash
# Two "hosts" on one machine: two network namespaces joined by a veth pair,
# and `mpirun` with one rank in each (docs/multinode.md). Runs the
# data-parallel demo across them and checks its comparison, first over the
# plain link, then with `tc tbf` shaping both ends to RATE (default 1gbit);
# with --bench, also bm_collectives_mpi's overlap benchmark on each link.
#
#   scripts/multinode.sh STEPGRAPH [--rate 1gbit] [--bench BM_COLLECTIVES_MPI] [--steps N]
#
# Exit codes: 0 passed, 1 failed, 77 skipped (not root, or namespaces,
# veth or tbf unavailable: the reason is printed).
#
# How (issue 16): mpirun runs inside namespace A; Open MPI reaches the
# other "host" through an rsh agent (written here) that runs the remote
# daemon with `ip netns exec B`. Addresses are only those of the veth pair,
# in a /24 of 10.201.0.0/16 chosen from this script's pid.
#  - `--bind-to none`: each namespace's daemon believes it has a host of its
#    own and would bind its rank to core 0 — both ranks on one core.
#  - `--mca routed direct`: Open MPI's default routing sometimes fails at
#    launch across the namespaces ("internal programming error").
#  - `--mca btl self,tcp` and `btl_tcp_if_include`/`oob_tcp_if_include` on
#    the veth subnet: no shared memory between the "hosts", and no other
#    interface.
# Everything it makes (namespaces, veth pair, qdiscs, agent, processes left
# in the namespaces) is removed on exit, also on failure or interruption;
# every run is bounded by `timeout`.
set -uo pipefail

usage() {
  echo "usage: $0 STEPGRAPH [--rate RATE] [--bench BM_COLLECTIVES_MPI] [--steps N]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
stepgraph=$(readlink -f "$1")
shift
rate=1gbit
bench=""
steps=60
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=$2; shift 2 ;;
    --bench) bench=$(readlink -f "$2"); shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ -x "$stepgraph" ] || { echo "multinode: $stepgraph is not an executable" >&2; exit 2; }

skip() {
  echo "SKIP: $*"
  exit 77
}
[ "$(id -u)" -eq 0 ] || skip "network namespaces need root (running as uid $(id -u))"
command -v ip >/dev/null || skip "iproute2's ip is not installed"
command -v tc >/dev/null || skip "iproute2's tc is not installed"
mpirun=$(command -v mpirun) || skip "mpirun is not installed"

tag=$$
nsa=sg-mn-a-$tag
nsb=sg-mn-b-$tag
va=sgva$((tag % 100000))
vb=sgvb$((tag % 100000))
net=10.201.$((tag % 250 + 1))
ipa=$net.1
ipb=$net.2
work=$(mktemp -d /tmp/sg-multinode.XXXXXX)

cleanup() {
  for ns in "$nsa" "$nsb"; do
    if ip netns list 2>/dev/null | grep -qw "$ns"; then
      pids=$(ip netns pids "$ns" 2>/dev/null)
      [ -n "$pids" ] && kill -9 $pids 2>/dev/null
      ip netns del "$ns" 2>/dev/null
    fi
  done
  ip link del "$va" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$nsa" 2>/dev/null || skip "cannot create a network namespace (ip netns add failed)"
ip netns add "$nsb" || skip "cannot create a second network namespace"
ip link add "$va" type veth peer name "$vb" 2>/dev/null || skip "cannot create a veth pair"
ip link set "$va" netns "$nsa"
ip link set "$vb" netns "$nsb"
ip -n "$nsa" addr add "$ipa/24" dev "$va"
ip -n "$nsb" addr add "$ipb/24" dev "$vb"
for ns in "$nsa" "$nsb"; do ip -n "$ns" link set lo up; done
ip -n "$nsa" link set "$va" up
ip -n "$nsb" link set "$vb" up

# The rsh agent: `agent [options] HOST COMMAND...`; Open MPI may pass ssh
# options first. The command runs in the namespace that owns HOST.
cat >"$work/agent" <<EOF
#!/usr/bin/env bash
while [ \$# -gt 0 ] && [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
case "\$host" in
  $ipa) ns=$nsa ;;
  $ipb) ns=$nsb ;;
  *) echo "multinode agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" bash -c "\$*"
EOF
chmod +x "$work/agent"

mpi_flags=(--allow-run-as-root --oversubscribe --bind-to none -np 2 --host "$ipa:1,$ipb:1"
  --mca plm_rsh_agent "$work/agent" --mca routed direct
  --mca btl self,tcp --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24")

run_across() {  # label, then the program and its arguments
  local label=$1
  shift
  local out="$work/$label.out"
  local t0 t1
  t0=$(date +%s%N)
  timeout 300 ip netns exec "$nsa" "$mpirun" "${mpi_flags[@]}" "$@" >"$out" 2>&1
  local rc=$?
  t1=$(date +%s%N)
  echo "--- $label: exit $rc after $(((t1 - t0) / 1000000)) ms"
  cat "$out"
  return $rc
}

check_demo() {  # label
  local label=$1 out="$work/$1.out"
  grep -q "OK: training across ranks" "$out" || { echo "FAIL ($label): no OK line"; return 1; }
  # Each rank ran in its own namespace, each its own "host": local size 1.
  [ "$(grep -c 'local 0 of 1' "$out")" -eq 2 ] || { echo "FAIL ($label): expected two hosts of one rank each"; return 1; }
  return 0
}

failed=0
run_across plain "$stepgraph" demo --ranks --steps "$steps" && check_demo plain || failed=1
[ -n "$bench" ] && { run_across bench-plain "$bench" --benchmark_filter='Overlap' --benchmark_out="$work/plain.json" || failed=1; }

# Shape both ends: tbf (token bucket) at RATE; netem is not available in
# every kernel, so rate, not delay.
for pair in "$nsa:$va" "$nsb:$vb"; do
  ns=${pair%%:*}
  dev=${pair#*:}
  ip netns exec "$ns" tc qdisc add dev "$dev" root tbf rate "$rate" burst 256kb latency 100ms ||
    skip "tc tbf is not available here"
done
ip netns exec "$nsa" tc qdisc show dev "$va" | head -1
run_across shaped "$stepgraph" demo --ranks --steps "$steps" && check_demo shaped || failed=1
[ -n "$bench" ] && { run_across bench-shaped "$bench" --benchmark_filter='Overlap' --benchmark_out="$work/shaped.json" || failed=1; }
if [ -n "$bench" ] && [ -n "${SG_MULTINODE_KEEP:-}" ]; then
  cp "$work"/*.json "$SG_MULTINODE_KEEP"/ 2>/dev/null
fi

if [ $failed -ne 0 ]; then
  echo "FAIL: multinode"
  exit 1
fi
echo "PASS: the data-parallel demo across two namespaces matches its reference, unshaped and shaped ($rate)"
