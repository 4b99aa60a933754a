# syntax=docker/dockerfile:1
#
# The petrel image: one static binary (`petrel agent`, `petrel controller`,
# the CLI) on Debian slim, with nft and wireguard-go for the agent.
# Build with `docker build -t petrel .`;
# multi-arch with `docker buildx build --platform linux/amd64,linux/arm64`.

# Build stage: Debian's Rust image, whose glibc runs the protoc that the
# proto crate vendors; the musl target makes the binary static.
FROM rust:1.95-bookworm AS build
ARG TARGETARCH
# musl-gcc compiles the C parts of dependencies (ring) for musl. Debian's
# own version of the day is fine: it is a build tool, not in the image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN case "${TARGETARCH:-amd64}" in \
        amd64) echo x86_64-unknown-linux-musl ;; \
        arm64) echo aarch64-unknown-linux-musl ;; \
        *) echo "unsupported architecture ${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target \
    && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
# The caches keep the registry and the build between image builds; the
# binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p petrel --target "$(cat /rust-target)" \
    && cp "target/$(cat /rust-target)/release/petrel" /petrel \
    && cp "target/$(cat /rust-target)/release/petrel-ipam" /petrel-ipam

# Final stage: Debian slim with the two programs the agent runs: nft
# (natOutgoing's table) and wireguard-go (WireGuard where the kernel has no
# module). No CA certificates: the API server's CA comes with the service
# account token. Non-root by default: the controller runs as such; the
# agent's DaemonSet runs it as root with three capabilities (charts/petrel).
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nftables wireguard-go \
    && rm -rf /var/lib/apt/lists/*
USER 65532:65532
COPY --from=build /petrel /usr/local/bin/petrel
# The CNI plugin; the chart's init container copies it to the host.
COPY --from=build /petrel-ipam /usr/local/bin/petrel-ipam
ENTRYPOINT ["/usr/local/bin/petrel"]
