# syntax=docker/dockerfile:1
#
# attestation-broker container image.
#
#   docker build -t attestation-broker:dev .
#
# Stage 1 builds the release binary with the committed Cargo.lock (--locked)
# in the official Rust image. Stage 2 is distroless: glibc and libgcc only, no
# shell, no package manager, running as the unprivileged uid 65532. Cargo's
# registry and target directories live in BuildKit cache mounts, so nothing
# from the build stage reaches the final image except the binary and the
# example configuration. Pin both base images by digest in your pipeline.

FROM rust:1.95-bookworm AS build
# The source revision shown by ci_build_info{revision}. The build context has
# no .git, so pass it: docker build --build-arg BROKER_GIT_REVISION="$(git rev-parse HEAD)" .
# Without it the label says "unknown".
ARG BROKER_GIT_REVISION=unknown
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin attestation-broker \
    && install -D -m 0755 target/release/attestation-broker /out/attestation-broker

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="attestation-broker" \
      org.opencontainers.image.description="Turns GitHub Actions OIDC tokens into short-lived AWS credentials, under an explicit policy" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/attestation-broker /usr/local/bin/attestation-broker
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
