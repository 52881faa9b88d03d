# Build the single executable in Bun's image, run it from a slim base as a non-root user.
FROM oven/bun:1.4.5 AS build
# Behind a TLS-inspecting proxy `bun install` needs its CA: pass the bundle's path here and make the file
# visible to the build (podman build --volume DIR:DIR:ro). Unset, Bun trusts its own root certificates.
ARG NODE_EXTRA_CA_CERTS
# The commit `reviewpoint --version` names: the build context has no .git (pass `git rev-parse HEAD`).
ARG REVIEWPOINT_COMMIT
WORKDIR /src
COPY package.json bun.lock bunfig.toml ./
COPY patches ./patches
RUN bun install --frozen-lockfile
COPY . .
RUN bun run build

FROM debian:bookworm-slim
# The data folder exists, owned by the server's user, before VOLUME: a new named volume copies its owner.
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/reviewpoint reviewpoint \
  && install -d -o reviewpoint -g reviewpoint -m 700 /var/lib/reviewpoint/data
COPY --from=build /src/dist/reviewpoint /usr/local/bin/reviewpoint
USER reviewpoint
WORKDIR /var/lib/reviewpoint
ENV ENVIRONMENT=production HOST=0.0.0.0 PORT=8000 DATA_DIR=/var/lib/reviewpoint/data
VOLUME ["/var/lib/reviewpoint/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/reviewpoint"]
CMD ["serve"]
