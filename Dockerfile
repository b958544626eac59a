# Switchyard's container image: built in a full Rust image, shipped in a distroless one
# (glibc and CA-free: the binary carries the webpki roots it needs), as a non-root user.
#   docker build -t switchyard .
#   docker run --rm -p 8080:8080 switchyard        # the default CMD: the demo; curl localhost:8080/
# Your own config: mount its directory (so edits reload) and name the file, e.g.
#   docker run --rm -p 8080:8080 -v "$PWD/myconfig:/etc/switchyard" switchyard run -c /etc/switchyard/switchyard.toml
# with `listen = ["0.0.0.0:8080"]` and endpoints the container can reach. (This repository's
# config/switchyard.toml is an annotated example: it routes only Host shop.example.com, to
# endpoints on the container's own loopback, so it answers 404/503 as is; `docker compose up`
# runs config/docker-compose.toml with sample upstreams.)

FROM rust:1-bookworm AS build
# etcd-client (fleets) compiles etcd's protos at build time: protoc and the well-known
# protos it imports (libprotobuf-dev, only a Recommends of protobuf-compiler).
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a source change does not rebuild them. Cargo refuses a manifest
# whose [[bench]] files are missing, so every one declared gets a stub.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in $(awk '/^\[\[bench\]\]/ { b = 1; next } b && /^name *=/ { gsub(/"/, "", $3); print $3; b = 0 }' Cargo.toml); do \
         printf 'fn main() {}\n' > "benches/$b.rs"; done \
    && cargo build --release --locked --bin switchyard \
    && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin switchyard \
    && strip target/release/switchyard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
# 65532: distroless' `nonroot` user.
USER 65532:65532
EXPOSE 8080 8443 9901
# `ctl health` asks the admin listener's /healthz: no shell or curl needed.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/switchyard", "ctl", "--admin", "http://127.0.0.1:9901", "health"]
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["demo", "--listen", "0.0.0.0:8080", "--admin", "127.0.0.1:9901"]
