#!/usr/bin/env bash
# Entrypoint of the `kafka` service of compose/docker-compose.yml (apache/kafka image): one KRaft node
# (broker + controller) whose client listeners require SASL/SCRAM, configured from the environment.
#
# The image's own entrypoint cannot create SCRAM users, which KRaft only accepts when the storage is
# formatted (`kafka-storage.sh format --add-scram`), so this script writes server.properties, formats
# the storage on first start with the driftline user, then runs the broker in the foreground.
#   DRIFTLINE_KAFKA__SASL_USERNAME / DRIFTLINE_KAFKA__SASL_PASSWORD  the SCRAM user (required)
#   DRIFTLINE_KAFKA__SASL_MECHANISM                                   SCRAM-SHA-256 (default) or -512
# Listeners: SASL_PLAINTEXT on :9092 (compose network, advertised as kafka:9092) and on :9094
# (published as 127.0.0.1:9092 for host clients); the KRaft controller listener stays on 127.0.0.1
# inside the container. Same layout as the local stack's compose/kafka/server.properties.template.
set -euo pipefail

KAFKA_HOME="${KAFKA_HOME:-/opt/kafka}"
DATA_DIR="${KAFKA_DATA_DIR:-/var/lib/kafka/data}"
CONFIG_DIR="${KAFKA_CONFIG_DIR:-/tmp/driftline-kafka}"
user="${DRIFTLINE_KAFKA__SASL_USERNAME:?DRIFTLINE_KAFKA__SASL_USERNAME is required}"
password="${DRIFTLINE_KAFKA__SASL_PASSWORD:?DRIFTLINE_KAFKA__SASL_PASSWORD is required}"
mechanism="${DRIFTLINE_KAFKA__SASL_MECHANISM:-SCRAM-SHA-256}"

case "$mechanism" in
  SCRAM-SHA-256 | SCRAM-SHA-512) ;;
  *) echo "kafka: DRIFTLINE_KAFKA__SASL_MECHANISM must be SCRAM-SHA-256 or SCRAM-SHA-512" >&2; exit 1 ;;
esac
for value in "$user" "$password"; do
  case "$value" in
    *[\",=\[\]\\]* | *$'\n'*)
      echo 'kafka: the SASL user and password may not contain " , = [ ] \ or newlines' >&2; exit 1 ;;
  esac
done

umask 077 # the files below hold the password
mkdir -p "$CONFIG_DIR"
jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$user\" password=\"$password\";"
lower="$(echo "$mechanism" | tr '[:upper:]' '[:lower:]')"
cat >"$CONFIG_DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:9093
controller.listener.names=CONTROLLER
listeners=INTERNAL://:9092,HOST://:9094,CONTROLLER://127.0.0.1:9093
advertised.listeners=INTERNAL://kafka:9092,HOST://127.0.0.1:9092
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:SASL_PLAINTEXT,HOST:SASL_PLAINTEXT
sasl.enabled.mechanisms=$mechanism
sasl.mechanism.inter.broker.protocol=$mechanism
listener.name.internal.$lower.sasl.jaas.config=$jaas
listener.name.host.$lower.sasl.jaas.config=$jaas
log.dirs=$DATA_DIR/logs
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
EOF
# for the health check and for operators (kafka-topics.sh --command-config ...)
cat >"$CONFIG_DIR/client.properties" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=$mechanism
sasl.jaas.config=$jaas
EOF

if [ ! -f "$DATA_DIR/logs/meta.properties" ]; then
  mkdir -p "$DATA_DIR/logs"
  [ -f "$DATA_DIR/cluster.id" ] || "$KAFKA_HOME/bin/kafka-storage.sh" random-uuid >"$DATA_DIR/cluster.id"
  "$KAFKA_HOME/bin/kafka-storage.sh" format --standalone --ignore-formatted \
    --cluster-id "$(cat "$DATA_DIR/cluster.id")" --config "$CONFIG_DIR/server.properties" \
    --add-scram "$mechanism=[name=$user,password=$password]" >/dev/null
  echo "kafka: storage formatted with SCRAM user $user"
fi
exec "$KAFKA_HOME/bin/kafka-server-start.sh" "$CONFIG_DIR/server.properties"
