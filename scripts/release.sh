#!/usr/bin/env bash
# Builds the release archive dist/gantry-<version>-linux-x86_64.tar.gz:
#   bin/gantry, bin/gantry-launcher, bin/gantry-launcher.sha256 (for the CloudFormation bucket),
#   cloudformation/workerpool.yaml, helm/gantry-workerpool/, systemd/gantry-launcher.service,
#   docs/, and SHA256SUMS over all of them.
# The version is the workspace's (Cargo.toml [workspace.package]); the Helm chart's appVersion
# must equal it, since the chart's default launcher image tag is the server's version.
#
# usage: scripts/release.sh [--image]
#   --image  also build the launcher image gantry-launcher:<version> in the local Docker engine
#            (the launcher binary, its shared libraries and the CA certificates; no shell).
# Environment: GANTRY_RELEASE_PROFILE (default release; the tests use dev to package the debug
# build), DIST_DIR (default dist), GANTRY_IMAGE_NAME (default gantry-launcher),
# GANTRY_RELEASE_NO_BUILD=1 (package the binaries already built for that profile).
set -euo pipefail
cd "$(dirname "$0")/.."

build_image=false
case "${1:-}" in
    "") ;;
    --image) build_image=true ;;
    *) echo "usage: $0 [--image]" >&2; exit 2 ;;
esac

version=$(sed -n '/^\[workspace\.package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "release: no version in Cargo.toml [workspace.package]" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || { echo "release: builds linux-x86_64 only, this is $(uname -m)" >&2; exit 1; }
chart_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/helm/gantry-workerpool/Chart.yaml)
[ "$chart_version" = "$version" ] || {
    echo "release: the Helm chart's appVersion is $chart_version, the workspace's version $version" >&2
    exit 1
}

profile=${GANTRY_RELEASE_PROFILE:-release}
case "$profile" in dev) profile_dir=debug ;; *) profile_dir=$profile ;; esac
target_dir=${CARGO_TARGET_DIR:-target}
dist=${DIST_DIR:-dist}
name=gantry-$version-linux-x86_64

if [ "${GANTRY_RELEASE_NO_BUILD:-}" != 1 ]; then
    echo "==> cargo build --profile $profile (gantry $version)"
    # Releases include the autoscaler (the AWS SDK; docs/autoscaling.md).
    cargo build --locked --profile "$profile" --features autoscaler --bin gantry --bin gantry-launcher
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stage=$tmp/pkg
mkdir -p "$stage"/{bin,cloudformation,helm,systemd,docs}
install -m 0755 "$target_dir/$profile_dir/gantry" "$target_dir/$profile_dir/gantry-launcher" "$stage/bin/"
# The CloudFormation user data verifies the launcher it downloads against this file.
(cd "$stage/bin" && sha256sum gantry-launcher > gantry-launcher.sha256)
install -m 0644 deploy/cloudformation/workerpool.yaml "$stage/cloudformation/"
cp -R deploy/helm/gantry-workerpool "$stage/helm/"
install -m 0644 deploy/systemd/gantry-launcher.service "$stage/systemd/"
cp -R docs/. "$stage/docs/"

# The archive's own checksums: `sha256sum -c SHA256SUMS` after unpacking.
(cd "$stage" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum > "$tmp/SHA256SUMS")
mv "$tmp/SHA256SUMS" "$stage/SHA256SUMS"

# Reproducible: fixed order, owners and times (those of the last commit).
mtime=$(git log -1 --format=%ct 2>/dev/null || echo 0)
mkdir -p "$dist"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
    -czf "$dist/$name.tar.gz" SHA256SUMS bin cloudformation helm systemd docs
(cd "$dist" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "==> $dist/$name.tar.gz"

if $build_image; then
    # FROM scratch: no registry is needed. The binary links glibc dynamically, so its libraries
    # (as ldd lists them) and the loader come along, plus the system CAs and a non-root user.
    root=$tmp/image
    mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/var/lib/gantry-launcher"
    install -m 0755 "$stage/bin/gantry-launcher" "$root/usr/local/bin/"
    ldd "$stage/bin/gantry-launcher" | grep -o '/[^ ]*' | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    echo 'gantry:x:10001:10001::/var/lib/gantry-launcher:/nonexistent' > "$root/etc/passwd"
    echo 'gantry:x:10001:' > "$root/etc/group"
    chmod 1777 "$root/tmp"
    chown 10001:10001 "$root/var/lib/gantry-launcher"
    tar -C "$root" --numeric-owner -c . | docker import \
        -c 'USER 10001:10001' \
        -c 'ENV GANTRY_WORK_DIR=/var/lib/gantry-launcher' \
        -c 'ENTRYPOINT ["/usr/local/bin/gantry-launcher"]' \
        - "${GANTRY_IMAGE_NAME:-gantry-launcher}:$version" >/dev/null
    echo "==> image ${GANTRY_IMAGE_NAME:-gantry-launcher}:$version"
fi
