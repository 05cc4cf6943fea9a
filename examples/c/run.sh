#!/usr/bin/env bash
# Build examples/c/forget.c (plain C99) against qforget's static library and the committed
# header, run one real request on bundled data (the MNIST MLP forgets class 3), and check that
# its JSON report is the one `qforget forget --json` prints for the same request (timings and
# written paths aside), that its delta verifies, and that the model it gives is byte-identical
# to the CLI's `--export`.
#   examples/c/run.sh host      x86_64 (or whatever the host is), the lean library
#   examples/c/run.sh aarch64   cross-built for aarch64, run under qemu-aarch64 -cpu cortex-a76,
#                               compared with the host CLI's report: same request, same numbers
#   examples/c/run.sh armv7     the same for 32-bit ARM (thumbv7neon) under qemu-arm (not in CI:
#                               the lean armv7 CLI's request is checked by cross/same-bytes.sh)
# Uses the dev profile (the test build's dependencies) and the lean feature set (no tract). The
# library is examples/c/staticlib (libqforget_c.a): qforget's lean rlib bundled as a static
# archive, so after cross/same-bytes.sh built the lean CLI for a target it only links.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
tdir="${CARGO_TARGET_DIR:-target}"
mode="${1:-host}"
model=onnx-models/mnist_mlp_matmul_qdq.onnx
data=data/mnist
ids=examples/c/mnist-class3.ids
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The report without what differs between two runs of the same request: wall times, the
# paths (and the delta hash, whose request id is fresh) of what was written, and the kernel
# tier that ran (the host's AVX tier against the device's NEON one; the same bytes either way).
normalize() {
    sed -e '/"epoch_seconds": \[\],/d' -e '/"epoch_seconds": \[/,/\]/d' \
        -e '/"seconds":/d' -e '/"delta":/d' -e '/"delta_sha256":/d' -e '/"export":/d' \
        -e '/"kernel":/d' "$1"
}

echo "== reference: qforget forget --json (host CLI)"
# The binary the integration tests use: after `cargo test` (as in .ci/run) nothing is rebuilt,
# whereas `cargo build` would rebuild the dependencies without the dev-dependencies' features.
cargo test --quiet --no-run --test it
"$tdir"/debug/qforget forget "$model" --dataset "$data" --forget-ids "$ids" --json \
    --export "$work/cli.onnx" > "$work/cli.json"

case "$mode" in
    host)
        echo "== static library (lean, host) and the C example"
        cargo build --quiet -p qforget-c
        cc -std=c99 -Wall -Wextra -Werror -pedantic -Iinclude examples/c/forget.c \
            "$tdir"/debug/libqforget_c.a -lpthread -ldl -lm -o "$work/forget"
        run=("$work/forget")
        ;;
    aarch64)
        "$root/device-tests/install.sh" >/dev/null
        echo "== static library (lean, aarch64) and the C example, cross-built"
        cargo build --quiet -p qforget-c --target aarch64-unknown-linux-gnu
        aarch64-linux-gnu-gcc -std=c99 -Wall -Wextra -Werror -pedantic -Iinclude \
            examples/c/forget.c "$tdir"/aarch64-unknown-linux-gnu/debug/libqforget_c.a \
            -lpthread -ldl -lm -o "$work/forget"
        run=(qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a76 "$work/forget")
        ;;
    armv7)
        "$root/device-tests/install.sh" >/dev/null
        echo "== static library (lean, armv7 with NEON) and the C example, cross-built"
        cargo build --quiet -p qforget-c --target thumbv7neon-unknown-linux-gnueabihf
        arm-linux-gnueabihf-gcc -std=c99 -Wall -Wextra -Werror -pedantic -Iinclude \
            examples/c/forget.c "$tdir"/thumbv7neon-unknown-linux-gnueabihf/debug/libqforget_c.a \
            -lpthread -ldl -lm -o "$work/forget"
        run=(qemu-arm -L /usr/arm-linux-gnueabihf -cpu cortex-a15 "$work/forget")
        ;;
    *)
        echo "usage: $0 [host|aarch64|armv7]" >&2
        exit 2
        ;;
esac

echo "== C example ($mode): forget $model $data $ids req.qfd"
"${run[@]}" "$model" "$data" "$ids" "$work/req.qfd" > "$work/c.json" 2> "$work/c.err" || {
    cat "$work/c.err" >&2
    exit 1
}
grep -q '"delta_sha256"' "$work/c.json" || { echo "the C example wrote no delta" >&2; exit 1; }
grep -q '"kernel": "[a-z0-9-]*"' "$work/c.json" || { echo "the C API's report names no kernel" >&2; exit 1; }
if ! diff <(normalize "$work/cli.json") <(normalize "$work/c.json"); then
    echo "the C API's report differs from qforget forget --json (diff above)" >&2
    exit 1
fi
"$tdir"/debug/qforget verify "$model" "$work/req.qfd" | tail -1
# Same request, same bytes: the model the C run's delta gives is the host CLI's export.
"$tdir"/debug/qforget apply "$model" "$work/req.qfd" --out "$work/c.onnx" >/dev/null
cmp "$work/cli.onnx" "$work/c.onnx"
echo "C example ($mode): same report as the CLI, delta verified, model byte-identical to the CLI's export"
