#!/usr/bin/env bash
# Builds the web demo into web-demo/www/pkg (MemoryDriver only) and
# web-demo/www/pkg-turso (with TursoDriver::memory()), installing the
# wasm32 target and wasm-bindgen-cli (at the version in Cargo.lock) if missing.
# Prints the gzipped size of each .wasm.
#   web-demo/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
if [ "$(wasm-bindgen --version 2> /dev/null | cut -d' ' -f2)" != "$version" ]; then
    cargo install wasm-bindgen-cli --version "$version"
fi

wasm=target/wasm32-unknown-unknown/web/litebus_web_demo.wasm
build() { # features, output directory
    cargo build -p litebus-web-demo --target wasm32-unknown-unknown --profile web $1
    rm -rf "web-demo/www/$2"
    wasm-bindgen --target web --no-typescript --out-dir "web-demo/www/$2" "$wasm"
    printf '%s: %s bytes, %s bytes gzipped\n' "$2" \
        "$(wc -c < "web-demo/www/$2/litebus_web_demo_bg.wasm")" \
        "$(gzip -9 -c "web-demo/www/$2/litebus_web_demo_bg.wasm" | wc -c)"
}
build "" pkg
build "--features turso" pkg-turso
