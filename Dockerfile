# cachebus image for docker-compose.yml: the CLI (`cachebus sidecar`, `tail`, ...) and the demo.
# Build: docker build -t cachebus:local .

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json ./
COPY bus ./bus
COPY worker-runtime ./worker-runtime
COPY cli ./cli
COPY demo-workers ./demo-workers
COPY bench ./bench
COPY test ./test
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY docs ./docs
COPY grafana ./grafana
USER node
EXPOSE 9464
ENTRYPOINT []
CMD ["node", "dist/cli/cachebus.js", "--help"]
