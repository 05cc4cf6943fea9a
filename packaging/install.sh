#!/usr/bin/env bash
# Build qforget's C library (lean: no tract engine) and install it with its header and a
# pkg-config file:  packaging/install.sh PREFIX [--target TRIPLE]
#   PREFIX/lib/libqforget.a, PREFIX/lib/libqforget.so, PREFIX/include/qforget.h,
#   PREFIX/lib/pkgconfig/qforget.pc
# Then: cc app.c $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs --static qforget)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${1:?usage: packaging/install.sh PREFIX [--target TRIPLE]}"
shift
cd "$root"
target_args=("$@")
dir=target/release
if [ ${#target_args[@]} -ge 2 ] && [ "${target_args[0]}" = --target ]; then
    dir="target/${target_args[1]}/release"
fi
for kind in staticlib cdylib; do
    cargo rustc --release --lib --no-default-features --crate-type "$kind" "${target_args[@]}"
done
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
cp "$dir/libqforget.a" "$dir/libqforget.so" "$prefix/lib/"
cp include/qforget.h "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" packaging/qforget.pc.in \
    > "$prefix/lib/pkgconfig/qforget.pc"
echo "installed qforget $version into $prefix"
