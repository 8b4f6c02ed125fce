# switchboard container image.
#
#   docker build -t switchboard .
#   docker run -d --name switchboard -p 10010:10010 -p 1111:1111 \
#       -p 10086:10086 -p 10087:10087 -v /path/to/files:/srv/files:ro switchboard
#   docker run --rm switchboard check          # validate the built-in config
#   docker exec switchboard switchboard probe -c /etc/switchboard/switchboard.toml
#
# The config is config/container.toml; to use another, mount it over
# /etc/switchboard/switchboard.toml (the entrypoint already passes -c, so a
# second -c on the command line is refused).

# --- builder: same Debian release as the runtime, hence the same glibc.
FROM rust:1-bookworm AS builder
WORKDIR /build
# The image ships what `cargo build --release` builds: no debug info, the
# symbol table kept (Cargo.toml's [profile.release]; about 11 MB).

# Dependencies first, against stub sources, so that a change under src/
# does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# config/switchboard.toml is compiled in (the embedded default).
COPY src ./src
COPY config ./config
# COPY keeps the files' old mtimes; touching the crate roots makes cargo
# rebuild the crate instead of keeping the stub's binary.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/switchboard /out/switchboard

# --- runtime
FROM debian:bookworm-slim

# A fixed non-root uid/gid, so volume permissions can be set on the host.
RUN groupadd --gid 10001 switchboard \
    && useradd --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin switchboard \
    && mkdir -p /srv/files

COPY --from=builder /out/switchboard /usr/local/bin/switchboard
COPY config/container.toml /etc/switchboard/switchboard.toml

# The download root; the daemon only reads it.
VOLUME /srv/files
# echo, download, keyword-bot, random-bot
EXPOSE 10010 1111 10086 10087 10010/udp 10086/udp 10087/udp

USER 10001:10001

# The daemon handles SIGTERM itself, also as PID 1: it stops accepting,
# drains for shutdown_grace (8s, below docker stop's 10s) and exits 0.
STOPSIGNAL SIGTERM

# Exits 0 only when every listener of the config answers.
HEALTHCHECK --interval=30s --timeout=5s CMD ["switchboard", "probe", "-c", "/etc/switchboard/switchboard.toml"]

# No CMD: arguments select a subcommand (check, probe, default-config) with
# the same config; none runs the server.
ENTRYPOINT ["switchboard", "-c", "/etc/switchboard/switchboard.toml"]
