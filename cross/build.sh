#!/usr/bin/env bash
# One-command cross build of the device `qforget` binary (Cargo.toml's `device` profile: fat LTO,
# one codegen unit, abort on panic) for the ARM boards:
#   aarch64-unknown-linux-gnu            (Raspberry Pi 4/5, Jetson; NEON and sdot chosen at run time)
#   thumbv7neon-unknown-linux-gnueabihf  (32-bit Raspberry Pi OS etc.; armv7 with NEON on)
# plus the host's own lean build for comparison. Binaries are stripped into cross/out/.
# Usage: cross/build.sh [extra cargo args]   (default features: --no-default-features, the lean
# device build without the tract reference engine; pass e.g. `--features tract-engine` to add it)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/device-tests/install.sh"
cd "$root"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--no-default-features)
out="$root/cross/out"
mkdir -p "$out"

build() { # target strip-tool (an explicit --target keeps target/release, the default build, intact)
    local target="$1" strip="$2"
    echo "== cargo build --profile device --target $target ${args[*]}"
    cargo build --profile device --bin qforget --target "$target" "${args[@]}"
    "$strip" -o "$out/qforget-$target" "target/$target/device/qforget"
}
build aarch64-unknown-linux-gnu aarch64-linux-gnu-strip
build thumbv7neon-unknown-linux-gnueabihf arm-linux-gnueabihf-strip
build "$(rustc -vV | sed -n 's/^host: //p')" strip

echo "== stripped sizes"
for f in "$out"/qforget-*; do
    printf '%-60s %8d bytes  %s\n' "$(basename "$f")" "$(stat -c %s "$f")" "$(file -b "$f" | cut -d, -f1-2)"
done
