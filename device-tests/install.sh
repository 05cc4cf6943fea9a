#!/usr/bin/env bash
# Installs what cross builds and emulated device tests need: Rust std for the ARM targets,
# Debian's cross linkers + libc, and qemu's user-mode emulators. Idempotent; run as root
# (or with sudo available). Skips apt when every tool is already on PATH.
set -euo pipefail

rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf \
    thumbv7neon-unknown-linux-gnueabihf

need=0
for tool in aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc qemu-aarch64 qemu-arm qemu-x86_64; do
    command -v "$tool" >/dev/null 2>&1 || need=1
done
if [ "$need" = 1 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu \
        libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user \
        >/dev/null
fi
echo "cross toolchains and qemu ready"
