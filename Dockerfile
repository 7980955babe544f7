# The rolegate image: one binary for every subcommand, plus iproute2 for the agent's init
# container that adds the link-local address (charts/rolegate/templates/agent.yaml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin rolegate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/rolegate /usr/local/bin/rolegate
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/rolegate"]
