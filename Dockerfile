# syntax=docker/dockerfile:1
#
# attestation-broker container image.
#
#   docker build -t attestation-broker:dev .
#
# Where the binary comes from is chosen with --build-arg BINARY_FROM:
#   source    (default) built here with the committed Cargo.lock (--locked)
#             in the official Rust image; Cargo's registry and target
#             directories are BuildKit cache mounts, so nothing of the build
#             reaches the final image except the stripped binary.
#   prebuilt  copied from dist/linux-$TARGETARCH/attestation-broker in the
#             build context: the release workflow puts there the static,
#             stripped musl binaries it built on native runners and publishes
#             as release assets, so the image ships the very bytes of the
#             checksummed release and a multi-arch build runs no compiler.
# The final stage is distroless: glibc and libgcc (unused by the static
# release binary, needed by the one built from source), CA certificates, no
# shell, no package manager, running as the unprivileged uid 65532.
#
# Base images are pinned by digest; the tag beside it says what it is, the
# digest decides what is pulled. To bump one, resolve the tag's current
# multi-platform index digest and replace the sha256 after the tag:
#   docker buildx imagetools inspect rust:1.95-bookworm --format '{{.Manifest.Digest}}'
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot --format '{{.Manifest.Digest}}'
# (or `crane digest IMAGE:TAG`), then build, test and commit.

ARG BINARY_FROM=source

FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS source
# The source revision shown by ci_build_info{revision}. The build context has
# no .git, so pass it: docker build --build-arg BROKER_GIT_REVISION="$(git rev-parse HEAD)" .
# Without it the metric says "unknown".
ARG BROKER_GIT_REVISION=unknown
WORKDIR /src
COPY . .
# The line tables (debug = "line-tables-only") are most of the binary: they
# go to a separate file, linked by a .gnu_debuglink section; the `debug-info`
# stage below exports it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin attestation-broker \
    && install -D -m 0755 target/release/attestation-broker /out/attestation-broker \
    && objcopy --only-keep-debug /out/attestation-broker /out/attestation-broker.debug \
    && objcopy --strip-all --add-gnu-debuglink=/out/attestation-broker.debug /out/attestation-broker

# docker build --target debug-info --output type=local,dest=out .
FROM scratch AS debug-info
COPY --from=source /out/attestation-broker.debug /

FROM scratch AS prebuilt
ARG TARGETARCH
COPY dist/linux-${TARGETARCH}/attestation-broker /out/attestation-broker

FROM ${BINARY_FROM} AS binary

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
# Set by the release workflow (the tag, the commit, the repository URL).
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/ourorg/attestation-broker
LABEL org.opencontainers.image.title="attestation-broker" \
      org.opencontainers.image.description="Turns GitHub Actions OIDC tokens into short-lived AWS credentials, under an explicit policy" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=binary /out/attestation-broker /usr/local/bin/attestation-broker
# The example configuration; in Kubernetes a ConfigMap is mounted over it.
COPY config/ /etc/attestation-broker/
# broker.toml names policy.toml next to itself; the explicit path keeps the
# shipped policy when another --config is given (any BROKER_SECTION__KEY can be
# overridden the same way).
ENV BROKER_POLICY__FILE=/etc/attestation-broker/policy.toml
USER 65532:65532
# 8443: POST /issue (TLS with server.tls_cert/tls_key, or terminated in front).
# 9090: /metrics, /healthz, /readyz.
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/attestation-broker", "serve", "--config", "/etc/attestation-broker/broker.toml"]
