#!/usr/bin/env bash
# CPU seconds per frame of `mirage generate examples/room.png --traj orbit_360 --frames N` (preview
# backend, 1 torch thread) for several N, to check that the cost per frame does not grow with the
# video. CPU seconds = user + system of the whole process (start-up included), from /usr/bin/time;
# /proc/loadavg is printed before each run. Usage: scripts/cost_per_frame.sh [N ...] (default 97 385)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MIRAGE_THREADS=1 PYTHONPATH="$PWD"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for n in "${@:-97 385}"; do
  for n1 in $n; do
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    /usr/bin/time -f "%U %S %M" -o "$out/time" python3 -m mirage_cli generate examples/room.png --traj orbit_360 \
      --frames "$n1" --out "$out/run_$n1" --quiet > /dev/null
    read -r user sys rss_kb < "$out/time"
    python3 - "$n1" "$user" "$sys" "$rss_kb" "$load" "$out/run_$n1/run.json" <<'PY'
import json, sys
n, user, sys_, rss, load, run = sys.argv[1:]
t = json.load(open(run))["totals"]
cpu = float(user) + float(sys_)
print(f"frames {int(n):4d}: {cpu / int(n):.3f} CPU s/frame ({cpu:.1f} s), {t['memory_points']:,} points, "
      f"peak RSS {int(rss) / 2**20:.2f} GB, wall {t['wall_seconds']:.1f} s, load before {load}")
PY
  done
done
