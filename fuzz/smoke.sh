#!/usr/bin/env bash
# Runs every braid fuzz target for N seconds (default 15) over the committed corpus and fails
# if any of them crashes (panic, failed check, sanitizer report, timeout, OOM).
#
#   fuzz/smoke.sh [SECONDS]
#
# Installs what it needs when missing: cargo-fuzz (`cargo install cargo-fuzz --locked`) and,
# when run as root on a Debian/Ubuntu CI image, a C++ compiler (`apt-get install -y g++`:
# libfuzzer-sys compiles libFuzzer with it); with BRAID_NO_INSTALL=1 it installs nothing and
# names what is missing. Uses the stable toolchain with RUSTC_BOOTSTRAP=1
# for the sanitizer flags. New inputs go to a temporary directory: the committed corpus is only
# read. Crash inputs are kept in fuzz/artifacts/TARGET/ for upload.
set -euo pipefail

cd "$(dirname "$0")"
secs="${1:-15}"
targets=(
    classify geneve_inbound offload_segment offload_coalesce control_envelope cluster_yaml
    gw_wireguard gw_ipsec port_classify esp_open ike_message ike_payloads ike_engine
)
export RUSTC_BOOTSTRAP=1

install=yes
if [[ ${BRAID_NO_INSTALL:-0} != 0 ]]; then
    install=no
fi
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
    if [[ $install == yes && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
    else
        echo "smoke.sh: no C++ compiler (libFuzzer needs one): install g++ or clang" >&2
        exit 2
    fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    if [[ $install == no ]]; then
        echo "smoke.sh: cargo-fuzz is missing and BRAID_NO_INSTALL is set: cargo install cargo-fuzz --locked" >&2
        exit 2
    fi
    cargo install cargo-fuzz --locked
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
    case "$t" in
        esp_open) max_len=2048 ;;
        cluster_yaml) max_len=8192 ;;
        *) max_len=4096 ;;
    esac
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
