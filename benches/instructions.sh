#!/usr/bin/env bash
# Client CPU work per published message, in instructions (valgrind's
# callgrind, which counts the same for the same binary and input whatever
# else the machine is doing), for each way of driving Kavari and for raw
# rskafka, in one run. Each client publishes 20,000 and then 40,000
# messages in a process of its own; the difference over 20,000 cancels
# start-up, connecting and the bench's own set-up. The broker runs in
# another process (started by the bench, or yours with KAVARI_BROKERS) and
# is not counted.
#
# Run: bash benches/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo bench -p kavari-benches --bench publish --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "no bench binary" >&2; exit 1; }

instructions() { # client:bytes messages
    local out
    out=$(KAVARI_BENCH_PROFILE=$1 KAVARI_BENCH_MESSAGES=$2 KAVARI_BENCH_ROUNDS=1 \
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" 2>&1)
    if ! grep -Eq " B: [0-9]+ msgs/s" <<<"$out"; then
        echo "$1 with $2 messages did not finish:" >&2
        tail -n 5 <<<"$out" >&2
        exit 1
    fi
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' <<<"$out"
}

echo "| payload | client | instructions per message | ratio to raw rskafka |"
echo "| --- | --- | ---: | ---: |"
for size in 100 1024; do
    raw=""
    for client in raw kavari task spawn joined batch; do
        small=$(instructions "$client:$size" 20000)
        large=$(instructions "$client:$size" 40000)
        echo "$client:$size: $small instructions for 20,000, $large for 40,000" >&2
        if (( large <= small )); then
            echo "$client:$size: 40,000 messages took no more than 20,000: a run went wrong" >&2
            exit 1
        fi
        per=$(( (large - small) / 20000 ))
        [ -n "$raw" ] || raw=$per
        ratio=$(awk -v a="$per" -v b="$raw" 'BEGIN { printf "%.2f", a / b }')
        case $client in
            raw) name="raw rskafka, ~256 KiB batches" ;;
            kavari) name="kavari publish, 20,000 in flight in one task" ;;
            task) name="kavari publish, a task per message" ;;
            spawn) name="(the same tasks, no publish)" ;;
            joined) name="kavari publish, 5,000 joined per task" ;;
            batch) name="kavari publish_batch, 5,000 per call" ;;
        esac
        echo "| $size B | $name | $per | $ratio |"
    done
done
