#!/usr/bin/env bash
# Installs what building and testing wirelens needs on a fresh Debian machine
# with rustup: the wasm target for plugins, and (as root) Debian packages.
# Safe to run again: every step is skipped when already done.
set -euo pipefail

need_target() {
    rustup target list --installed | grep -qx "$1" || rustup target add "$1"
}
need_target wasm32-unknown-unknown

# Debian packages: clang and libbpf-dev build the kernel programs; the rest
# are the real servers and clients of the end-to-end tests: curl and nginx,
# iproute2 (network namespaces), python3, redis-server (with redis-cli and
# redis-benchmark), dnsmasq and dig, MariaDB with its client and the Perl
# driver of the prepared-statement client, PostgreSQL with psql and pgbench.
packages=(clang libbpf-dev curl iproute2 python3 redis-server dnsmasq-base bind9-dnsutils nginx-light
    mariadb-server mariadb-client libdbd-mariadb-perl postgresql postgresql-contrib)
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
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
