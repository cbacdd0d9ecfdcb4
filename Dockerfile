# syntax=docker/dockerfile:1

# Build stage: the toolchain the project is developed with (rustc 1.95), on the same Debian release
# (bookworm, glibc 2.36) as the runtime image below.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# make builds jemalloc, the binary's allocator (its options come with the sources, .cargo/config.toml).
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin stage-guard \
    && cp target/release/stage-guard /stage-guard

# Runtime: glibc and libgcc only, no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /stage-guard /stage-guard
USER 65532:65532
# 8443: webhook (TLS); 8080: admin (/livez, /readyz, /metrics).
EXPOSE 8443 8080
ENTRYPOINT ["/stage-guard"]
CMD ["serve"]
