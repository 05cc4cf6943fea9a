#!/usr/bin/env bash
# Same request, same bytes, on every architecture and kernel tier (issue 13, item 5).
#
# One forget request (the C example's: the MNIST MLP forgets the 1,034 bundled images of digit 3,
# default OEU settings) is made
#   - on the host, once per kernel tier this CPU has (x86: scalar, avx2, avx-vnni, avx512-vnni),
#     and once with metrics (the form examples/c/run.sh compares the C API against),
#   - by the lean aarch64 build under `qemu-aarch64 -cpu cortex-a72` (the NEON tier),
#   - by the lean armv7 (thumbv7neon) build under `qemu-arm -cpu cortex-a15` (scalar tier),
# and every run must export the same model bytes and write a delta that `apply` turns into those
# same bytes and that `verify` accepts on the device. So the weight changes are identical, and a
# server can recompute a device's erasure and check it. `examples/c/run.sh aarch64` (run after
# this in .ci/run, reusing the aarch64 build) closes the loop for the NEON dot-product tier
# (cortex-a76) through the C API. A convolutional model under qemu costs minutes per request,
# so CI keeps to the MLP; tests/it/kernel_tiers.rs checks a CNN request across the host's tiers.
#
# Why it can hold: the default gradient path multiplies int8 by int8 into i32 (exact in any order,
# on any SIMD width); what remains in floating point must run in the same order everywhere. This
# script is what checks it, on this request.
#
# Uses the dev profile and the lean feature set (no tract), the test build's host binary.
# Usage: cross/same-bytes.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
tdir="${CARGO_TARGET_DIR:-target}"
"$root/device-tests/install.sh" >/dev/null

model=onnx-models/mnist_mlp_matmul_qdq.onnx
request=(--dataset data/mnist --forget-ids examples/c/mnist-class3.ids --json)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The binary the integration tests use: after `cargo test` (as in .ci/run) nothing is rebuilt.
cargo test --quiet --no-run --test it
host="$tdir"/debug/qforget

# check NAME [--no-metrics] RUNNER...: one request through RUNNER (a qforget binary, maybe under qemu), its
# export compared with the reference, its delta applied and verified by the same binary.
check() {
    local name="$1" extra=()
    shift
    if [ "$1" = --no-metrics ]; then
        extra=(--no-metrics)
        shift
    fi
    local out="$work/$name"
    mkdir -p "$out"
    local t0=$SECONDS
    if ! "$@" forget "$model" "${request[@]}" "${extra[@]}" --export "$out/model.onnx" --out "$out/req.qfd" \
        > "$out/report.json" 2> "$out/stderr"; then
        if grep -q 'cannot run here' "$out/stderr"; then
            echo "SKIPPED $name: $(grep 'cannot run here' "$out/stderr" | head -1)"
            return 0
        fi
        cat "$out/stderr" >&2
        echo "FAILED $name: the request failed" >&2
        exit 1
    fi
    "$@" apply "$model" "$out/req.qfd" --out "$out/applied.onnx" > /dev/null
    "$@" verify "$model" "$out/req.qfd" > /dev/null
    cmp "$out/model.onnx" "$out/applied.onnx"
    if [ ! -e "$work/reference.onnx" ]; then
        cp "$out/model.onnx" "$work/reference.onnx"
    elif ! cmp "$work/reference.onnx" "$out/model.onnx"; then
        echo "FAILED $name: exported model differs from the first run's" >&2
        exit 1
    fi
    local changed
    changed="$(sed -n 's/^ *"changed_weights": \([0-9]*\).*/\1/p' "$out/report.json")"
    printf '%-28s %4ds  changed weights %s  export sha256 %s\n' "$name" $((SECONDS - t0)) \
        "$changed" "$(sha256sum < "$out/model.onnx" | cut -c1-16)"
}

echo "== host: $(uname -m), one run per kernel tier (QFORGET_KERNEL)"
for k in scalar avx2 avx-vnni avx512-vnni neon neon-dotprod; do
    case "$(uname -m):$k" in
        x86_64:neon*|aarch64:avx*) continue ;;
    esac
    check "host $k" --no-metrics env QFORGET_KERNEL="$k" "$host"
done
check "host, with metrics" "$host"

echo "== lean builds for aarch64-unknown-linux-gnu and thumbv7neon-unknown-linux-gnueabihf"
# One cargo run for both targets: one build graph keeps both cores busy.
cargo build --quiet --no-default-features --bin qforget --target aarch64-unknown-linux-gnu \
    --target thumbv7neon-unknown-linux-gnueabihf
echo "== emulated devices"
check "aarch64 cortex-a72 (neon)" --no-metrics env QFORGET_KERNEL=neon \
    qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a72 \
    "$tdir"/aarch64-unknown-linux-gnu/debug/qforget
check "armv7 cortex-a15 (scalar)" --no-metrics \
    qemu-arm -L /usr/arm-linux-gnueabihf -cpu cortex-a15 \
    "$tdir"/thumbv7neon-unknown-linux-gnueabihf/debug/qforget

echo "same request, same bytes: every run above exported $(sha256sum < "$work/reference.onnx" | cut -c1-16)…, and its delta applies to it and verifies"
