#!/usr/bin/env bash
# Builds the stand-in for the Dockerfile's base image (see Containerfile here for what it stands
# for and what not) and tags it with the Dockerfile's FROM name, so `podman build --pull=never .`
# builds the project's Dockerfile unchanged. No container registry is reachable: the root
# filesystem comes from Debian's archive (mmdebstrap, bookworm = Python 3.11, with this machine's
# own apt sources, so no mirror is named here), pip reaches the package index through the
# machine's CA bundle, mounted read-only into the build and never baked into the image.
# Cached: the image carries a label with a hash of its inputs (this script, the Containerfile,
# the apt sources); it is rebuilt only when that hash changes. FORCE=1 rebuilds.
set -euo pipefail
cd "$(dirname "$0")"

TAG=${BASE_TAG:-docker.io/rayproject/ray:2.60.0-py311}
ROOTFS=localhost/ray-training-rootfs:bookworm
SOURCES=/etc/apt/sources.list.d/debian.sources
CA=/etc/ssl/certs/ca-certificates.crt
PACKAGES=python3,python3-venv,python3-pip,ca-certificates,libgomp1
LABEL=io.ray-training.inputs

for tool in podman mmdebstrap; do
    command -v "$tool" >/dev/null || { echo "base image: $tool is missing: run make container-tools" >&2; exit 1; }
done
[[ -r $SOURCES ]] || { echo "base image: $SOURCES is missing (the apt sources the root filesystem is built from)" >&2; exit 1; }

inputs=$( { cat build.sh Containerfile "$SOURCES"; echo "$PACKAGES"; } | sha256sum | cut -c1-16)
have=$(podman image inspect --format "{{index .Labels \"$LABEL\"}}" "$TAG" 2>/dev/null || true)
if [[ $have == "$inputs" && -z ${FORCE:-} ]]; then
    echo "base image: $TAG up to date ($inputs)"
    exit 0
fi

source ../limits.sh
nofile=$(cap_limit "$(ulimit -Hn)" 1048576); nproc=$(cap_limit "$(ulimit -Hu)" 32768)
limits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "base image: root filesystem (mmdebstrap bookworm minbase + $PACKAGES)"
mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    bookworm "$work/rootfs.tar" "$SOURCES"
podman import --quiet "$work/rootfs.tar" "$ROOTFS" >/dev/null
echo "base image: $TAG (ray[default] from the package index)"
podman build --quiet --pull=never --network host "${limits[@]}" \
    -v "$CA:$CA:ro" --build-arg "ROOTFS=$ROOTFS" \
    --label "$LABEL=$inputs" -t "$TAG" -f Containerfile . >/dev/null
podman image rm --force "$ROOTFS" >/dev/null 2>&1 || true
echo "base image: $TAG built ($inputs)"
