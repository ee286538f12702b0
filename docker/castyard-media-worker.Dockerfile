# The per-broadcast media worker (SFU and compositor roles), with Debian's FFmpeg.
# Build from the repository root:
#   docker build -f docker/castyard-media-worker.Dockerfile -t castyard-media-worker .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN make release BIN=castyard-media-worker

FROM debian:bookworm-slim
RUN apt-get update -q && apt-get install -y -q --no-install-recommends ffmpeg fonts-dejavu-core ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/castyard-media-worker /usr/local/bin/castyard-media-worker
USER 65532:65532
ENTRYPOINT ["castyard-media-worker"]
