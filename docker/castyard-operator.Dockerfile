# The Broadcast operator. Build from the repository root:
#   docker build -f docker/castyard-operator.Dockerfile -t castyard-operator .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN make release BIN=castyard-operator

FROM debian:bookworm-slim
RUN apt-get update -q && apt-get install -y -q --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/castyard-operator /usr/local/bin/castyard-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["castyard-operator"]
