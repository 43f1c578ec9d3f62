#!/usr/bin/env bash
# Memory read/write speed of an earlier commit against the working tree, interleaved in one run
# (1 torch thread; /proc/loadavg printed before every figure). Usage:
#   scripts/memory_speed_before_after.sh [BEFORE_REV] [REPEATS]
# BEFORE_REV defaults to the commit before the memory-speed work (the parent of the first speed merge).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-af82257^1}
repeats=${2:-2}
before=$(mktemp -d)
trap 'rm -rf "$before"' EXIT
git archive "$rev" | tar -x -C "$before"
export OMP_NUM_THREADS=1 MIRAGE_THREADS=1
for rep in $(seq "$repeats"); do
  for n in 50000 200000 800000; do
    for d in "$before" "$PWD"; do
      label=$([ "$d" = "$PWD" ] && echo "after" || echo "before ($rev)")
      echo "== $label points=$n repeat=$rep load $(cut -d' ' -f1-3 /proc/loadavg)"
      (cd "$d" && PYTHONPATH="$d" python3 -m mirage_cli.bench.memory_speed --points "$n" 2>&1 | grep -E '^(read|write|copy|  )')
    done
  done
done
