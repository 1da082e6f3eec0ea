# syntax=docker/dockerfile:1
# Stage 1: compile TypeScript and keep only production dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

# Stage 2: the runtime image.
FROM node:20-bookworm-slim
# etcd from Debian, so that the image also runs stand-alone with the embedded
# default (ETCD_ENDPOINTS unset); with ETCD_ENDPOINTS set it is never started.
RUN apt-get update \
 && apt-get install -y --no-install-recommends etcd-server \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY ui ./ui
RUN mkdir -p /app/data && chown node:node /app/data
USER node
# Inside a container the gateway must listen on all interfaces to be reachable
# through a published port. Authentication is not configured by default, so
# the operator acknowledges that here; publish the port on a trusted network
# only (for example -p 127.0.0.1:8080:8080) or configure authentication.
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080 ALLOW_INSECURE_PUBLIC=1
EXPOSE 8080
VOLUME ["/app/data"]
# (Over HTTPS when TLS_CERT_FILE is set; the check talks to the gateway on
# loopback, so it does not verify the certificate's name.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD NODE_TLS_REJECT_UNAUTHORIZED=0 node --no-warnings -e "fetch((process.env.TLS_CERT_FILE?'https':'http')+'://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "dist/server.js"]
