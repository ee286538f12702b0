# The API and web studio (`castyard api` in a cluster). Build from the repository root:
#   docker build -f docker/castyard.Dockerfile -t castyard .
# The studio needs Node 20.19+ (Vite 7), newer than Debian 12's.
FROM node:20-bookworm AS web
WORKDIR /src
COPY . .
RUN make web

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN make release BIN=castyard

FROM debian:bookworm-slim
# FFmpeg: the RTMP ingest remuxes with it, and re-encodes an OBS feed that joins a studio.
RUN apt-get update -q && apt-get install -y -q --no-install-recommends ca-certificates ffmpeg \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/castyard /usr/local/bin/castyard
COPY --from=web /src/frontend/dist /usr/share/castyard/web
COPY --from=web /src/frontend/node_modules/swagger-ui-dist /usr/share/castyard/swagger-ui
ENV CASTYARD_WEB_DIR=/usr/share/castyard/web \
    CASTYARD_SWAGGER_UI_DIR=/usr/share/castyard/swagger-ui \
    CASTYARD_DATA_DIR=/var/lib/castyard
RUN mkdir -p /var/lib/castyard && chown 65532:65532 /var/lib/castyard
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["castyard"]
CMD ["api"]
