# syntax=docker/dockerfile:1
# tabby-agent image, with the tabby-cni plugin the chart's init container installs on the
# node. Build from the repository root:
#   docker build -f images/agent.Dockerfile -t tabby-agent:0.1.0 .
#
# The agent runs as root with NET_ADMIN, SYS_ADMIN and NET_BIND_SERVICE (see the chart's
# agent-daemonset.yaml for why each): it programs routes and veths, enters pod network
# namespaces, listens on TCP 179, and writes root-owned host paths. The runtime image is
# debian-slim rather than distroless because the init container needs /bin/sh, install and mv
# to place tabby-cni and the conflist atomically.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tabby-agent -p tabby-cni \
        --bin tabby-agent --bin tabby-cni \
    && install -D -m 0755 target/release/tabby-agent /out/tabby-agent \
    && install -D -m 0755 target/release/tabby-cni /out/tabby-cni

FROM debian:bookworm-slim
# nft: the agent programs natOutgoing through it (without it natOutgoing is disabled with
# only a warning, and pods cannot reach beyond the cluster).
RUN apt-get update \
    && apt-get install -y --no-install-recommends nftables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/tabby-agent /usr/local/bin/tabby-agent
COPY --from=build /out/tabby-cni /usr/local/bin/tabby-cni
USER 0:0
EXPOSE 9097 179
ENTRYPOINT ["/usr/local/bin/tabby-agent"]
