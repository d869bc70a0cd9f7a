# syntax=docker/dockerfile:1
#
# The secret-sync container image: the statically linked binary and the CA roots, nothing
# else (no shell, no package manager), running as an unprivileged user (65532).
#
#   docker build -t secret-sync:0.1.0 .
#   docker run --rm -v "$PWD/secret-sync.toml:/etc/secret-sync/secret-sync.toml:ro" secret-sync:0.1.0 validate
#
# The working directory is /etc/secret-sync, so the config is looked up at
# /etc/secret-sync/secret-sync.toml (`secret-sync.toml` in the current directory) unless
# --config or SECRET_SYNC_CONFIG names another; relative paths in it are taken from the config
# file's directory. The entrypoint is the binary and the default
# command `run`; pass another command as the container's arguments. docs/recipes.md shows it
# in a Kubernetes CronJob. `cargo xtask lint` checks this file with hadolint; it cannot be
# built where this repository's own checks run (no container engine there).

# Build: Alpine's Rust targets musl, so the binary needs no libc at run time.
FROM rust:1.95-alpine AS build
# The C compiler and musl headers build aws-lc (rustls' crypto); ca-certificates gives the
# roots copied below. Alpine's packages are not pinned: the image tag pins the release.
# hadolint ignore=DL3018
RUN apk add --no-cache gcc musl-dev ca-certificates
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package secret-sync \
    && cp target/release/secret-sync /secret-sync \
    && /secret-sync --version

# Run: the binary and the CA roots only.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /secret-sync /usr/local/bin/secret-sync
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /etc/secret-sync
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/secret-sync"]
CMD ["run"]
