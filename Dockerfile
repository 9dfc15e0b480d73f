# syntax=docker/dockerfile:1
# The `sluice` binary (operator, CLI) in a distroless, non-root image.
#   docker build -t ghcr.io/sluice-dev/sluice:dev .

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p sluice-operator --bin sluice \
    && install -D -m 0755 target/release/sluice /out/sluice

# glibc + libgcc, no shell, runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/sluice /sluice
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/sluice"]
CMD ["operator"]
