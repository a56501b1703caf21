# Builds Caddy with caddy-spawn from this checkout using xcaddy.
#   docker build -f xcaddy.Dockerfile -t caddy-spawn .
# The image still needs containerd, its runc shim and runc on the host (or
# in the image) and must run privileged to start containers.
FROM caddy:2-builder AS builder
WORKDIR /src
COPY . .
RUN xcaddy build --with github.com/caddy-spawn/caddy-spawn=/src

FROM caddy:2
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
