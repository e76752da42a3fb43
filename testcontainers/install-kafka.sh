#!/usr/bin/env bash
# Installs the pinned Apache Kafka broker of the tests (4.4.0, the newest 4.x
# that Maven Central serves) when it is missing: Maven resolves kafka/pom.xml
# into a cache outside the repository, and the log4j 2 configuration goes
# beside the jars. About 10 s with a warm network, once per machine. Safe to
# run concurrently: a lock makes a second caller wait for the first.
#
# The cache is $KAVARI_KAFKA_HOME, else ~/.cache/kavari/kafka-4.4.0
# (kavari-testcontainers looks in the same place). It needs java (17 or
# newer) to run the broker and mvn to install it.
set -euo pipefail
cd "$(dirname "$0")"

KAFKA_VERSION=4.4.0
HOME_DIR="${KAVARI_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/kavari/kafka-$KAFKA_VERSION}"

installed() { [ -f "$HOME_DIR/.installed" ] && [ -f "$HOME_DIR/libs/kafka_2.13-$KAFKA_VERSION.jar" ]; }

if installed; then
    echo "install-kafka: Apache Kafka $KAFKA_VERSION already installed in $HOME_DIR"
    exit 0
fi
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    if command -v apt-get >/dev/null; then
        echo "install-kafka: installing Java 17 and Maven from Debian's packages" >&2
        sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq && $sudo apt-get install -y -qq openjdk-17-jre-headless maven
    else
        echo "install-kafka: java and mvn are needed; install a Java 17+ runtime and Maven" >&2
        exit 1
    fi
fi

mkdir -p "$HOME_DIR"
exec 9>"$HOME_DIR/.install.lock"
flock 9
if installed; then
    echo "install-kafka: Apache Kafka $KAFKA_VERSION installed by a concurrent run"
    exit 0
fi

start=$(date +%s)
echo "install-kafka: resolving Apache Kafka $KAFKA_VERSION from Maven Central into $HOME_DIR" >&2
rm -rf "$HOME_DIR/libs.partial"
mvn -B -q -f kafka/pom.xml dependency:copy-dependencies \
    -Dkafka.version="$KAFKA_VERSION" \
    -DincludeScope=runtime \
    -DoutputDirectory="$HOME_DIR/libs.partial"
rm -rf "$HOME_DIR/libs"
mv "$HOME_DIR/libs.partial" "$HOME_DIR/libs"
cp kafka/log4j2.yaml "$HOME_DIR/log4j2.yaml"
echo "$KAFKA_VERSION" > "$HOME_DIR/.installed"
echo "install-kafka: done in $(( $(date +%s) - start )) s ($(du -sh "$HOME_DIR/libs" | cut -f1) of jars)" >&2
