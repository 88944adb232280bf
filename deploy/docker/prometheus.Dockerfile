# Prometheus from Debian's package (2.42, with promtool), scraping the workers. Its config and
# rules are not in the image: compose mounts deploy/prometheus/ at /etc/egresswatch/prometheus.
#   docker build -f deploy/docker/prometheus.Dockerfile -t egresswatch/prometheus:local .
ARG BASE=debian:bookworm-slim
FROM ${BASE}

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      prometheus curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# The package created the user "prometheus"; the time series live in a volume it owns.
RUN install -d -o prometheus -g prometheus /var/lib/egresswatch/prometheus
USER prometheus
VOLUME /var/lib/egresswatch/prometheus
EXPOSE 9090
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
  CMD curl -sf --max-time 3 http://127.0.0.1:9090/-/ready
# --web.enable-lifecycle: `curl -X POST http://127.0.0.1:PORT/-/reload` after editing the
# mounted config or rules.
ENTRYPOINT ["/usr/bin/prometheus", \
  "--config.file=/etc/egresswatch/prometheus/prometheus.yml", \
  "--storage.tsdb.path=/var/lib/egresswatch/prometheus", \
  "--storage.tsdb.retention.time=15d", \
  "--web.listen-address=0.0.0.0:9090", \
  "--web.enable-lifecycle"]
