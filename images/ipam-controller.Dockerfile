# syntax=docker/dockerfile:1
# tabby-ipam-controller image. Build from the repository root:
#   docker build -f images/ipam-controller.Dockerfile -t tabby-ipam-controller:0.1.0 .
# Runs as an unprivileged user (65532): it only talks to the API server and serves
# /healthz, /readyz and /metrics on an unprivileged port.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tabby-ipam-controller --bin tabby-ipam-controller \
    && install -D -m 0755 target/release/tabby-ipam-controller /out/tabby-ipam-controller

# distroless/cc: glibc and libgcc only — no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tabby-ipam-controller /usr/local/bin/tabby-ipam-controller
USER 65532:65532
EXPOSE 9098
ENTRYPOINT ["/usr/local/bin/tabby-ipam-controller"]
