#!/usr/bin/env bash
# Builds the wirelens container image with the local Docker engine, with no
# registry and no network: the daemon and the shared libraries `ldd` names
# for it, imported as the image's whole file system (`docker import`), with
# the demo config as /etc/wirelens/wirelens.yaml (a ConfigMap mounted there
# replaces it; deploy/daemonset.yaml).
#
#   scripts/image.sh [TAG]        (default wirelens:latest)
#
# WIRELENS_BIN=path uses that binary instead of building one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-wirelens:latest}
bin=${WIRELENS_BIN:-}
if [[ -z $bin ]]; then
    (cd "$root" && cargo build --release --locked -p wirelens)
    bin=${CARGO_TARGET_DIR:-$root/target}/release/wirelens
fi
command -v docker > /dev/null || { echo "docker is missing: run scripts/setup.sh" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"
install -D -m 755 "$bin" "$stage/usr/local/bin/wirelens"
# `libm.so.6 => /lib/.../libm.so.6 (0x...)` and `/lib64/ld-linux-x86-64.so.2 (0x...)`.
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    install -D -m 755 "$lib" "$stage$lib"
done
install -D -m 644 "$root/configs/demo.yaml" "$stage/etc/wirelens/wirelens.yaml"
# The artifact cache: root's own, as the daemon requires.
install -d -m 700 "$stage/var/cache/wirelens" "$stage/tmp"

tar -C "$stage" --owner=0 --group=0 -c . | docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/wirelens"]' \
    --change 'CMD ["run", "-c", "/etc/wirelens/wirelens.yaml"]' \
    --change 'ENV WIRELENS_CACHE_DIR=/var/cache/wirelens' \
    --message "wirelens $("$bin" --version)" \
    - "$tag" > /dev/null
echo "$tag"
