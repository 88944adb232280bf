# Ceph RGW (S3) on one mon and one memstore OSD, started by scripts/rgw-local (Debian's ceph
# 16 packages). radosgw listens on the container's loopback (rgw-local binds 127.0.0.1 only);
# socat makes it reachable on :7480 for the stack and the port compose publishes.
#   docker build -f deploy/docker/rgw.Dockerfile -t egresswatch/rgw:local .
ARG BASE=debian:bookworm-slim
FROM ${BASE}

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ceph-mon ceph-osd radosgw ceph-common curl socat ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY scripts/rgw-local /opt/egresswatch/scripts/rgw-local
COPY deploy/docker/rgw-entrypoint /usr/local/bin/rgw-entrypoint
# The packages created the user "ceph"; the cluster lives in a volume it owns.
RUN install -d -o ceph -g ceph /var/lib/egresswatch/rgw
USER ceph
ENV EGRESSWATCH_RGW_DIR=/var/lib/egresswatch/rgw \
    EGRESSWATCH_RGW_INSTALL=0
VOLUME /var/lib/egresswatch/rgw
EXPOSE 7480
HEALTHCHECK --interval=5s --timeout=5s --start-period=120s --retries=3 \
  CMD curl -sf --max-time 3 http://127.0.0.1:7480/ | grep -q ListAllMyBucketsResult
ENTRYPOINT ["rgw-entrypoint"]
