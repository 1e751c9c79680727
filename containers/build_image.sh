#!/usr/bin/env bash
# Builds the project image (CPU variant), as `docker build -t ray-training:<version> .` would, on the
# stand-in base image (containers/base/build.sh) with --pull=never: no registry is reachable.
# podman's layer cache keeps the dependency layer while only training/ changes.
# pip inside the build reaches the package index through the machine's CA bundle, mounted
# read-only for the build only. IMAGE overrides the tag.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
IMAGE=${IMAGE:-localhost/ray-training:$version}
CA=/etc/ssl/certs/ca-certificates.crt
source containers/limits.sh
nofile=$(cap_limit "$(ulimit -Hn)" 1048576); nproc=$(cap_limit "$(ulimit -Hu)" 32768)

command -v podman >/dev/null || { echo "image: podman is missing: run make container-tools" >&2; exit 1; }
# One build at a time: `make test` starts one in the background and tests/containers calls this
# again; the second waits here, then finds every layer cached.
mkdir -p build
exec 9> build/.image-build.lock
flock 9
containers/base/build.sh
old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
podman build --pull=never --network host --layers \
    --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
    -v "$CA:$CA:ro" -t "$IMAGE" . >&2
# The image this build replaced (by id, nothing else): its layers no longer used go with it.
new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n $old && $old != "$new" ]]; then
    podman image rm "$old" >/dev/null 2>&1 || true
fi
echo "$IMAGE"
