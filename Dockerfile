# syntax=docker/dockerfile:1
# Two images, both distroless and non-root:
#   docker build -t ghcr.io/sluice-dev/sluice:0.1.0 .                       # the `sluice` binary (operator, CLI)
#   docker build --target examples -t ghcr.io/sluice-dev/examples:0.1.0 .   # the example producers and workers
# The chart and the example manifests name exactly these tags (never `:latest`).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p sluice-operator --bin sluice -p sluice-examples --bins \
    && install -D -m 0755 target/release/sluice /out/sluice \
    && for b in order-api order-worker render-api render-worker upload-api video-worker; do \
         install -D -m 0755 "target/release/$b" "/out/examples/$b"; \
       done

# The example binaries (order-api, order-worker, upload-api, video-worker, render-api,
# render-worker) on PATH; the manifests in examples/ pick one with `command`.
FROM gcr.io/distroless/cc-debian12:nonroot AS examples
COPY --from=builder /out/examples/ /usr/local/bin/
USER 65532:65532

# glibc + libgcc, no shell, runs as uid/gid 65532 (the default target: last in the file).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/sluice /sluice
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/sluice"]
CMD ["operator"]
