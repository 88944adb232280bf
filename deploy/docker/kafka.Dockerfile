# Apache Kafka, one KRaft node (broker + controller), from the jars that scripts/kafka-local
# fetches from Maven Central (the release is pinned in scripts/kafka/pom.xml).
#   docker build -f deploy/docker/kafka.Dockerfile -t egresswatch/kafka:local .
ARG BASE=debian:bookworm-slim
FROM ${BASE}

# python3-minimal: the health check speaks Kafka's protocol (deploy/docker/kafka-ready).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openjdk-17-jre-headless ca-certificates python3-minimal \
 && rm -rf /var/lib/apt/lists/*

# Maven only for the fetch: the jars stay, Maven and its download cache go in the same layer.
COPY scripts/kafka-local /opt/egresswatch/scripts/kafka-local
COPY scripts/kafka/pom.xml /opt/egresswatch/scripts/kafka/pom.xml
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends maven \
 && /opt/egresswatch/scripts/kafka-local fetch \
 && ln -s "$(dirname "$(ls -d /opt/egresswatch/.cache/kafka/*/libs/kafka_2.13-*.jar)")" \
      /opt/egresswatch/kafka-libs \
 && rm -rf /opt/egresswatch/.cache/m2 \
 && DEBIAN_FRONTEND=noninteractive apt-get purge -y --auto-remove maven \
 && rm -rf /var/lib/apt/lists/* /root/.m2

COPY deploy/docker/kafka-entrypoint /usr/local/bin/kafka-entrypoint
COPY deploy/docker/kafka-ready /usr/local/bin/kafka-ready
RUN useradd --system --home-dir /var/lib/egresswatch --create-home kafka \
 && install -d -o kafka -g kafka /var/lib/egresswatch/kafka
USER kafka
VOLUME /var/lib/egresswatch/kafka
EXPOSE 9092 9094
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=3 CMD ["kafka-ready"]
ENTRYPOINT ["kafka-entrypoint"]
