#!/usr/bin/env bash
# Runs every braid-ipsec fuzz target for N seconds (default 20) over the committed corpus and
# fails if any of them crashes (panic, failed check, sanitizer report, timeout, OOM).
#
#   fuzz/smoke.sh [SECONDS]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly compiler or, as here, stable with
# RUSTC_BOOTSTRAP=1. New inputs go to a temporary directory: the committed corpus is only read.
# Crash inputs are kept in fuzz/artifacts/TARGET/ for upload.
set -euo pipefail

cd "$(dirname "$0")"
secs="${1:-20}"
targets=(port_classify esp_open ike_message ike_payloads ike_engine)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke.sh: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi

# Build first, so build time is not fuzzing time (AddressSanitizer, debug assertions and
# overflow checks on: cargo-fuzz's defaults).
for t in "${targets[@]}"; do
    cargo fuzz build "$t"
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    if [[ ! -d "corpus/$t" ]]; then
        echo "smoke.sh: corpus/$t is missing" >&2
        failed+=("$t")
        continue
    fi
    max_len=4096
    [[ "$t" == esp_open ]] && max_len=2048
    mkdir -p "$work/$t" "artifacts/$t"
    echo "== $t: ${secs}s over $(find "corpus/$t" -type f | wc -l) corpus files"
    if cargo fuzz run "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len="$max_len" -timeout=30 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" >"$work/$t.log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+DONE' "$work/$t.log" | tail -n 1 || true
    else
        echo "!! $t FAILED; last lines of its log:"
        tail -n 80 "$work/$t.log"
        failed+=("$t")
    fi
done

if ((${#failed[@]})); then
    echo "smoke.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "smoke.sh: ${#targets[@]} targets, ${secs}s each, no crash"
