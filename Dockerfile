# The rolegate image for people with Docker (or buildx in the release workflow). `make image`
# builds the same layout without a daemon (scripts/image.sh): one binary for every subcommand at
# /usr/local/bin/rolegate, user 65532:65532, entrypoint rolegate, the CA bundle at
# /etc/ssl/certs/ca-certificates.crt, and /bin/sh plus iproute2's `ip` for the agent's init
# container that adds the link-local address (charts/rolegate/templates/agent.yaml). Nothing is
# written outside /tmp: it runs with a read-only root filesystem.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin rolegate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nonroot
COPY --from=build /src/target/release/rolegate /usr/local/bin/rolegate
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.title=rolegate \
      org.opencontainers.image.description="Kubernetes operator and SAML IdP for AWS STS" \
      org.opencontainers.image.licenses=Apache-2.0 \
      org.opencontainers.image.source=https://github.com/rolegate/rolegate
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/rolegate"]
