# Multi-stage build of the four agentmeter binaries; the runtime image holds
# only the binaries and the demo key file.
FROM rust:1.85-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/agentmeter-ingest target/release/agentmeter-api \
       target/release/agentmeter-migrate target/release/agentmeter-loadgen /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 agentmeter
COPY --from=build /out/ /usr/local/bin/
COPY dev/api-keys.toml /etc/agentmeter/api-keys.toml
USER agentmeter
ENV AGENTMETER_API_KEYS=/etc/agentmeter/api-keys.toml
CMD ["agentmeter-api"]
