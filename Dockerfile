# Multi-stage build of the gauntlet binary and the built-in sidecar plugin.
#   docker build -t gauntlet .
#   docker run --rm gauntlet --help
# The runtime image holds only the binary (/usr/local/bin/gauntlet) and the sidecar component
# (/usr/local/lib/gauntlet/plugins/sidecar.wasm, found by `gauntlet sidecar` relative to the
# binary), on a slim Debian base with CA certificates.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# The WebAssembly guests (their own workspace), then the host binary (its build script
# installs the web UI's npm dependencies).
# The binary embeds the components found in plugins/target/components/.
RUN env -u RUSTFLAGS CARGO_TARGET_DIR=/src/plugins/target \
      cargo build --manifest-path plugins/Cargo.toml --release --target wasm32-wasip2 --locked -p sidecar -p compactor \
 && mkdir -p plugins/target/components \
 && cp plugins/target/wasm32-wasip2/release/sidecar.wasm plugins/target/wasm32-wasip2/release/compactor.wasm plugins/target/components/ \
 && cargo build --release --locked --bin gauntlet

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent gauntlet
COPY --from=build /src/target/release/gauntlet /usr/local/bin/gauntlet
COPY --from=build /src/plugins/target/wasm32-wasip2/release/sidecar.wasm /usr/local/lib/gauntlet/plugins/sidecar.wasm
USER gauntlet
EXPOSE 10901 10902
ENTRYPOINT ["/usr/local/bin/gauntlet"]
