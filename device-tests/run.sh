#!/usr/bin/env bash
# Run qforget's kernel test suite on emulated ARM CPUs (one command, from a clean clone):
#   aarch64 under `qemu-aarch64 -cpu cortex-a72` (NEON, no dot product: Raspberry Pi 4 class),
#   aarch64 under `qemu-aarch64 -cpu cortex-a76` (NEON + sdot: Raspberry Pi 5 class),
#   armv7 (thumbv7neon) under `qemu-arm` (scalar tier, NEON enabled for auto-vectorisation).
# Each run names the kernels the CPU model must offer (QFORGET_EXPECT_KERNELS), so a tier that
# silently went missing fails instead of being skipped. Emulated speed is not a measure.
# Usage: device-tests/run.sh [a72] [a76] [armv7]   (default: all three)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/install.sh"
cd "$here/kernels"

runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(a72 a76 armv7)
for r in "${runs[@]}"; do
    case "$r" in
        a72) target=aarch64-unknown-linux-gnu cpu=cortex-a72 expect=scalar,neon ;;
        a76) target=aarch64-unknown-linux-gnu cpu=cortex-a76 expect=scalar,neon,neon-dotprod ;;
        armv7) target=thumbv7neon-unknown-linux-gnueabihf cpu=cortex-a15 expect=scalar ;;
        *) echo "unknown run '$r' (a72, a76, armv7)" >&2; exit 2 ;;
    esac
    echo "== kernel tests: $target on qemu -cpu $cpu (expect: $expect)"
    QEMU_CPU="$cpu" QFORGET_EXPECT_KERNELS="$expect" cargo test --target "$target" --lib
done
