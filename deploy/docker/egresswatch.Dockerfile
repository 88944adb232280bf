# egresswatch itself: the worker, the sample probed service and its faulty upstream, one image
# with a different command each (see compose.yml). Python is Debian's (3.11 on bookworm).
#   docker build -f deploy/docker/egresswatch.Dockerfile -t egresswatch/egresswatch:local .
ARG BASE=debian:bookworm-slim
FROM ${BASE}

# ca-certificates also picks up CAs placed in /usr/local/share/ca-certificates of the base
# (scripts/docker-local copies the host's there, for a TLS-inspecting egress).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/egresswatch/venv \
    PATH=/opt/egresswatch/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv "$VIRTUAL_ENV"

# Dependencies first, from pyproject.toml alone, so that a source change rebuilds one small
# layer instead of downloading faust, pyarrow and s3fs again.
WORKDIR /opt/egresswatch/src
COPY pyproject.toml README.md ./
RUN PIP_CERT=/etc/ssl/certs/ca-certificates.crt pip install --quiet '.[worker]' \
 && pip uninstall --quiet --yes egresswatch

COPY pipeline ./pipeline
COPY agents ./agents
COPY tables ./tables
COPY sinks ./sinks
COPY api ./api
RUN pip install --quiet --no-deps . \
 && egresswatch --version

# Runs as an unprivileged user; its state (Faust tables, the sink's spool) lives in
# /var/lib/egresswatch/worker, a volume in compose. The mount point exists in the image, owned
# by that user, so that a new named volume starts with the same owner.
RUN useradd --system --home-dir /var/lib/egresswatch --create-home egresswatch \
 && install -d -o egresswatch -g egresswatch /var/lib/egresswatch/worker
USER egresswatch
WORKDIR /var/lib/egresswatch
ENV EGRESSWATCH_DATA_DIR=/var/lib/egresswatch/worker \
    EGRESSWATCH_SINK_LOCAL_ROOT=/var/lib/egresswatch/sink \
    EGRESSWATCH_HTTP_HOST=0.0.0.0
EXPOSE 8080
CMD ["egresswatch", "worker"]
