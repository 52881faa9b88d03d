# Build the single executable in Bun's image, run it from a slim base as a non-root user.
FROM oven/bun:1.4.5 AS build
WORKDIR /src
COPY package.json bun.lock bunfig.toml ./
COPY patches ./patches
RUN bun install --frozen-lockfile
COPY . .
RUN bun run build

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/reviewpoint reviewpoint
COPY --from=build /src/dist/reviewpoint /usr/local/bin/reviewpoint
USER reviewpoint
WORKDIR /var/lib/reviewpoint
ENV ENVIRONMENT=production HOST=0.0.0.0 PORT=8000 DATA_DIR=/var/lib/reviewpoint/data
VOLUME ["/var/lib/reviewpoint/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/reviewpoint"]
CMD ["serve"]
