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
# The image runs every capability (sidecar, demo), so the optional peers (pg, bullmq, piscina,
# prom-client: devDependencies here) become dependencies before the dev tools are dropped; the
# versions stay the locked ones (`npm prune --omit=dev` alone would drop the peers too).
RUN npx tsc -p tsconfig.json \
 && node -e "const f=require('fs');const p=JSON.parse(f.readFileSync('package.json','utf8'));p.dependencies={...p.dependencies,...p.peerDependencies};delete p.peerDependencies;delete p.peerDependenciesMeta;delete p.devDependencies;f.writeFileSync('package.json',JSON.stringify(p,null,2))" \
 && npm install --omit=dev --ignore-scripts --no-audit --no-fund

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
