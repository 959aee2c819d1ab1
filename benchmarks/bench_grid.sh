#!/usr/bin/env bash
# benchmark.py on a local Ray (all cores: 2 runs at a time on the 2-core machine) against the same 8
# commands run one after another by bash. Order: ray, seq, ray, seq. Each measurement waits (up to 30 min)
# for a 1-minute load average below 0.3, runs in a fresh folder under $OUT (default: a temporary one), and
# samples the load average and any other process above 20% CPU (top, Ray's own processes left out) every
# 5 s. Usage: bash benchmarks/bench_grid.sh   (docs/benchmarks.md, "Many runs at once")
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d)} && mkdir -p "$OUT"
GRID=(--scripts magpo_coordsum.py --seeds 1 2 3 4 5 6 7 8 --extra="--total-timesteps 24576 --eval-interval 24576")
(cd "$OUT" && python "$REPO/benchmark.py" "${GRID[@]}" --dry-run > commands.txt)
n=0
for mode in ray seq ray seq; do
  n=$((n + 1))
  for _ in $(seq 1 360); do awk '{exit !($1 < 0.3)}' /proc/loadavg && break; sleep 5; done
  dir="$OUT/${n}_$mode"
  mkdir -p "$dir" && cd "$dir" || exit 1
  (while true; do
     cut -d' ' -f1 /proc/loadavg >> load.txt
     top -b -c -w 200 -n 2 -d 1 | awk '/^top -/{k++} k==2 && $1 ~ /^[0-9]+$/ && $9+0 > 20' \
       | grep -v "$REPO/\|ray::\|site-packages/ray\|top -b" >> other.txt
     sleep 4
   done) &
  sampler=$!
  start=$(date +%s.%N)
  if [ "$mode" = seq ]; then
    sed "s#^python #python $REPO/#" "$OUT/commands.txt" | bash > seq.log 2>&1
  else
    python "$REPO/benchmark.py" "${GRID[@]}" --no-plot > ray.log 2>&1
  fi
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  kill $sampler
  sps=$(cat seq.log runs/benchmark/*/log.txt 2>/dev/null | grep -o "iteration 3/3 .*SPS=[0-9]*" \
        | grep -o "[0-9]*$" | sort -n | sed -n '1p;$p' | tr '\n' ' ')  # the runs' slowest and fastest
  printf '%s %-3s %s wall %.1f s, %s runs, env-steps/s per run %s, ' \
    "$n" "$mode" "$(date -d "@${start%.*}" +%T)" "$wall" "$(ls runs | grep -c __)" "$sps"
  printf '1-min load mean %s max %s, other busy processes seen: %s\n' \
    "$(awk '{s += $1} END {printf "%.2f", s / NR}' load.txt)" "$(sort -g load.txt | tail -1)" "$(wc -l < other.txt)"
done
