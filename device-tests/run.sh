#!/usr/bin/env bash
# Run qforget's kernel test suite on emulated CPUs (one command, from a clean clone):
#   aarch64 under `qemu-aarch64 -cpu cortex-a72` (NEON, no dot product: Raspberry Pi 4 class),
#   aarch64 under `qemu-aarch64 -cpu cortex-a76` (NEON + sdot: Raspberry Pi 5 class),
#   armv7 (thumbv7neon) under `qemu-arm` (scalar tier, NEON enabled for auto-vectorisation),
#   x86_64 under `qemu-x86_64 -cpu max` (on an x86_64 host): AVX2 without AVX-512, the Haswell to
#   Zen 3 class. qemu 7.2 (Debian 12) emulates no AVX-VNNI either, so there the VNNI tiers are
#   reported as skipped and avx2 is the best tier; a qemu that emulates AVX-VNNI also runs the
#   avx-vnni tier on a CPU without AVX-512.
# Each run names the kernels the CPU model must offer (QFORGET_EXPECT_KERNELS), so a tier that
# silently went missing fails instead of being skipped. Emulated speed is not a measure.
# Usage: device-tests/run.sh [a72] [a76] [armv7] [x86-avx2]   (default: all; x86-avx2 only on
# an x86_64 host)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/install.sh"
cd "$here/kernels"

runs=("$@")
if [ ${#runs[@]} -eq 0 ]; then
    runs=(a72 a76 armv7)
    [ "$(uname -m)" != x86_64 ] || runs+=(x86-avx2)
fi
for r in "${runs[@]}"; do
    case "$r" in
        a72) target=aarch64-unknown-linux-gnu cpu=cortex-a72 expect=scalar,neon ;;
        a76) target=aarch64-unknown-linux-gnu cpu=cortex-a76 expect=scalar,neon,neon-dotprod ;;
        armv7) target=thumbv7neon-unknown-linux-gnueabihf cpu=cortex-a15 expect=scalar ;;
        x86-avx2) target=x86_64-unknown-linux-gnu cpu=max expect=scalar,avx2 ;;
        *) echo "unknown run '$r' (a72, a76, armv7, x86-avx2)" >&2; exit 2 ;;
    esac
    echo "== kernel tests: $target on qemu -cpu $cpu (expect: $expect)"
    # The host target has no runner in .cargo/config.toml (plain `cargo test` must stay native):
    # this run alone goes through qemu.
    QEMU_CPU="$cpu" QFORGET_EXPECT_KERNELS="$expect" \
        CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=qemu-x86_64 \
        cargo test --target "$target" --lib
done
