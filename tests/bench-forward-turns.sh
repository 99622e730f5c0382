#!/bin/bash
# Runner CPU against the bare forwarder (BENCHMARKS.md, issue 19): runs
# `bench-forward soak --seconds 6` for each runner binary given and for the
# bare forwarder in turns, ROUNDS times, and prints each one's CPU per
# 1,000 GETs, the median and the ratio to the bare forwarder's median, and
# the median of each round's ratio to the bare forwarder.
#
#   tests/bench-forward-turns.sh ROUNDS [--big] [--rate N] RUNNER...
#
# With --rate, every forwarder gets N GETs per second (see `bench-forward
# soak --rate`), so their CPU per GET compares their code alone.
#
# Build first: cargo build --release -p runner --bin kandan-runner &&
# cargo build --release -p integration-tests --bin bench-forward.
# BENCH overrides the bench-forward binary (copy it to keep it fixed).
set -euo pipefail
target=${CARGO_TARGET_DIR:-$(dirname "$0")/../target}
bench=${BENCH:-$target/release/bench-forward}
rounds=$1
shift
big=()
if [ "${1:-}" = "--big" ]; then
    big=(--big)
    shift
fi
if [ "${1:-}" = "--rate" ]; then
    big+=(--rate "$2")
    shift 2
fi
runners=("$@" "$bench")
declare -A cpu
for round in $(seq 1 "$rounds"); do
    for runner in "${runners[@]}"; do
        line=$("$bench" soak --runner "$runner" --seconds 6 "${big[@]}" 2>/dev/null | tail -1)
        echo "round $round $runner: $line" >&2
        cpu[$runner]="${cpu[$runner]:-} $(echo "$line" | sed -n 's/.*runner \([0-9.]*\) ms.*/\1/p')"
    done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bare=$(echo "${cpu[$bench]}" | median)
# Each round runs the forwarders back to back, so a round's ratio to the
# bare forwarder cancels how fast the machine was that minute; the median
# of those is printed beside the ratio of the medians.
read -ra bare_rounds <<< "${cpu[$bench]}"
for runner in "${runners[@]}"; do
    m=$(echo "${cpu[$runner]}" | median)
    read -ra own <<< "${cpu[$runner]}"
    ratios=""
    for i in "${!own[@]}"; do
        ratios="$ratios $(echo "scale=3; ${own[$i]} / ${bare_rounds[$i]}" | bc)"
    done
    paired=$(echo "$ratios" | median)
    echo "$runner: ms per 1,000:${cpu[$runner]}; median $m; / bare $(echo "scale=2; $m / $bare" | bc)x; median of the rounds' ratios ${paired}x"
done
