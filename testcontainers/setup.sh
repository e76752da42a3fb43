#!/usr/bin/env bash
# Everything the test suite needs on a fresh machine: the test broker, Apache
# Kafka 4.4.0 from Maven Central (about 10 s, once; nisshi instead, built
# once in about 11 minutes on 2 cores, when KAVARI_TEST_BROKER=nisshi), and
# the peers of the interop tests from PyPI: confluent-kafka (which bundles
# librdkafka 2.16) and the Python library Kavari ports, kavari 0.2.2.1; the
# openssl command, which makes the TLS tests' certificates.
set -euo pipefail
cd "$(dirname "$0")"
case "${KAVARI_TEST_BROKER:-kafka}" in
    kafka) bash install-kafka.sh ;;
    nisshi) bash install-broker.sh ;;
    *) echo "setup: KAVARI_TEST_BROKER=$KAVARI_TEST_BROKER: the test brokers are kafka and nisshi" >&2; exit 2 ;;
esac
if command -v openssl >/dev/null; then
    echo "setup: openssl found ($(openssl version))"
else
    echo "setup: installing openssl (certificates for the TLS tests)"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq openssl
fi
if python3 -c 'import confluent_kafka, sys; sys.exit(0 if confluent_kafka.version() == "2.16.1" else 1)' 2>/dev/null; then
    echo "setup: confluent-kafka 2.16.1 already installed"
else
    echo "setup: installing confluent-kafka 2.16.1 (the librdkafka interop peer)"
    python3 -m pip install --quiet --disable-pip-version-check "confluent-kafka==2.16.1"
fi
if python3 -c 'import importlib.metadata as m, sys; sys.exit(0 if m.version("kavari") == "0.2.2.1" else 1)' 2>/dev/null; then
    echo "setup: Python kavari 0.2.2.1 already installed"
else
    echo "setup: installing Python kavari 0.2.2.1 (the Python interop peer)"
    python3 -m pip install --quiet --disable-pip-version-check "kavari==0.2.2.1" "confluent-kafka==2.16.1"
fi
