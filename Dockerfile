# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY bench ./bench
COPY migrations ./migrations
RUN cargo build --release --locked --bin aumos-mlops-lifecycle

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --create-home aumos
WORKDIR /app
COPY --from=build /src/target/release/aumos-mlops-lifecycle /usr/local/bin/aumos-mlops-lifecycle
USER aumos
ENV AUMOS_HTTP__HOST=0.0.0.0 \
    AUMOS_HTTP__PORT=8000 \
    AUMOS_DATA_DIR=/app/data \
    AUMOS_LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/8000"]
ENTRYPOINT ["aumos-mlops-lifecycle"]
CMD ["serve"]
