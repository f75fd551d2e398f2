#!/usr/bin/env bash
# A rank that dies (SIGKILL) or stops answering (SIGSTOP) in the middle of
# `mpirun -np 2 stepgraph demo --ranks`: every run must end (no hang), with a
# non-zero status, within the watchdog's deadline + 5 s; with a stopped rank,
# rank 0 must report the step that timed out. Issue 16, item 5.
# Usage: rank_failure.sh MPIEXEC STEPGRAPH RUNS
set -u
mpiexec=$1; stepgraph=$2; runs=${3:-20}
deadline_ms=1500
bound_s=$((deadline_ms / 1000 + 5 + 3))  # + 3 s for mpirun's start-up and tear-down on 2 cores
fail=0
for fault in stop kill; do
  for i in $(seq 1 "$runs"); do
    log=$(mktemp)
    start=$(date +%s%N)
    timeout --signal=KILL 60 "$mpiexec" -np 2 --allow-run-as-root --oversubscribe --bind-to none --mca btl self,tcp \
      "$stepgraph" demo --ranks --steps 100 --deadline-ms "$deadline_ms" --fault-rank 1 --fault-step 30 \
      --fault "$fault" >"$log" 2>&1
    rc=$?
    elapsed_ms=$((($(date +%s%N) - start) / 1000000))
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 137 -a "$fault" = stop ] || [ "$elapsed_ms" -gt $((bound_s * 1000)) ]; then
      echo "FAIL: $fault run $i: exit $rc after $elapsed_ms ms (bound ${bound_s} s)"; tail -5 "$log"; fail=1
    elif [ "$fault" = stop ] && ! grep -q "rank 0 step 30 failed: step 30 did not finish within its deadline" "$log"; then
      echo "FAIL: $fault run $i: rank 0 did not report the step"; tail -5 "$log"; fail=1
    else
      echo "ok: $fault run $i: exit $rc after $elapsed_ms ms"
    fi
    rm -f "$log"
  done
done
pkill -KILL -f "stepgraph demo --ranks" 2>/dev/null  # a stopped rank left behind, if any
exit $fail
