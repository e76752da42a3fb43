#!/usr/bin/env bash
# Everything the test suite needs on a fresh machine: the test broker (built
# once, about 11 minutes on 2 cores) and the peers of the interop tests from
# PyPI: confluent-kafka (which bundles librdkafka 2.16) and the Python
# library Kavari ports, kavari 0.2.2.1; the openssl command, which makes
# the TLS tests' certificates.
set -euo pipefail
cd "$(dirname "$0")"
bash install-broker.sh
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
