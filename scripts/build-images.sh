#!/usr/bin/env bash
# Builds the container images Gantry ships, locally, without any registry:
#
#   gantry-runner:<version>    FROM scratch: busybox-static, git, Terraform 1.0.3
#                              and the null provider (images/runner/)
#   gantry-launcher:<version>  FROM scratch: the gantry-launcher binary, its glibc
#                              libraries, CA certificates, busybox-static (images/launcher/)
#
# <version> is the workspace version in Cargo.toml. Idempotent: unchanged
# inputs give the same image, from Docker's build cache.
#
#   scripts/build-images.sh                       # both, launcher from a release build
#   scripts/build-images.sh --profile debug       # launcher from target/debug (what the tests built)
#   scripts/build-images.sh runner                # one of them
#
# Needs: docker, Debian's busybox-static and git, and Terraform from
# scripts/install-terraform.sh (run here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PROFILE=release
TARGETS=()
while (($#)); do
    case "$1" in
        --profile) PROFILE=$2; shift 2 ;;
        --debug) PROFILE=debug; shift ;;
        runner | launcher) TARGETS+=("$1"); shift ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-images: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
((${#TARGETS[@]})) || TARGETS=(runner launcher)
case "$PROFILE" in release | debug) ;; *) echo "build-images: --profile is release or debug" >&2; exit 2 ;; esac

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
BUSYBOX=/bin/busybox
log() { printf '\n==> %s\n' "$*" >&2; }

command -v docker >/dev/null || { echo "build-images: docker is not installed" >&2; exit 1; }
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' || {
    echo "build-images: $BUSYBOX is not Debian's busybox-static (apt-get install busybox-static)" >&2
    exit 1
}

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

# Copies a file to the same path under ROOTFS (or to DEST), following symlinks.
put() { # rootfs file [dest]
    local dest=$1/${3:-$2}
    mkdir -p "$(dirname "$dest")"
    cp -L --preserve=mode "$2" "$dest"
}

# Copies an ELF binary and every shared library ldd says it loads.
put_with_libs() { # rootfs binary [dest]
    put "$@"
    local lib
    for lib in $(ldd "$2" | grep -o '/[^ ]*' | sort -u); do
        [ -e "$1$lib" ] || put "$1" "$lib"
    done
}

put_busybox() { # rootfs
    put "$1" "$BUSYBOX" /bin/busybox
    local applet
    for applet in $("$BUSYBOX" --list); do
        [ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
    done
}

put_base() { # rootfs
    local rootfs=$1
    mkdir -p "$rootfs"/{etc/ssl/certs,tmp,root,usr/bin}
    chmod 1777 "$rootfs/tmp"
    chmod 0700 "$rootfs/root"
    put "$rootfs" /etc/ssl/certs/ca-certificates.crt
    cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
gantry:x:1000:1000:Gantry run:/workspace:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
gantry:x:1000:
nogroup:x:65534:
EOF
    echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
}

build() { # name context
    log "docker build $1:$VERSION"
    # The legacy builder needs no BuildKit/buildx, which this host may lack.
    DOCKER_BUILDKIT=0 docker build --quiet --label "org.opencontainers.image.version=$VERSION" \
        -t "$1:$VERSION" "$2" 2>&1 | grep -v -i 'deprecated\|legacy builder\|buildx\|buildkit\|environment-variable\|^ *$\|install the' >&2 || true
    docker image inspect "$1:$VERSION" --format "$1:$VERSION {{.Id}} {{.Size}} bytes" || {
        echo "build-images: building $1:$VERSION failed" >&2
        exit 1
    }
}

build_runner() {
    local context=$STAGE/runner rootfs=$STAGE/runner/rootfs
    "$ROOT/scripts/install-terraform.sh"
    mkdir -p "$rootfs"
    cp images/runner/Dockerfile "$context/"
    put_base "$rootfs"
    put_busybox "$rootfs"
    mkdir -p "$rootfs/workspace"
    chmod 0777 "$rootfs/workspace"

    # Terraform, with the null provider where Terraform looks by itself
    # (its implied local mirror), so `init` needs no network for it.
    put "$rootfs" "$ROOT/.tools/bin/terraform" /usr/local/bin/terraform
    mkdir -p "$rootfs/usr/local/share/terraform"
    cp -r "$ROOT/.tools/terraform-plugins" "$rootfs/usr/local/share/terraform/plugins"

    # git from Debian (not any other git on PATH), with the libraries it
    # loads, its helpers (HTTPS remotes) and templates. Builtins are symlinks.
    local core=/usr/lib/git-core file
    [ -x $core/git ] || { echo "build-images: Debian's git is not installed (apt-get install git)" >&2; exit 1; }
    put_with_libs "$rootfs" $core/git
    ln -s ../lib/git-core/git "$rootfs/usr/bin/git"
    for file in "$core"/*; do
        case "$(basename "$file")" in
            git) ;;
            # Rarely used in a run, and heavy (or perl): left out.
            git-daemon | git-http-backend | git-http-push | git-imap-send | git-shell | scalar | git-instaweb | \
                git-cvs* | git-svn | git-send-email | git-archimport | git-p4 | mergetools | git-add--interactive) ;;
            *)
                if [ -L "$file" ]; then
                    cp -P "$file" "$rootfs$core/"
                elif file -L "$file" | grep -q ELF; then
                    put_with_libs "$rootfs" "$file"
                else
                    put "$rootfs" "$file"
                fi
                ;;
        esac
    done
    if [ -d /usr/share/git-core/templates ]; then
        mkdir -p "$rootfs/usr/share/git-core"
        cp -r /usr/share/git-core/templates "$rootfs/usr/share/git-core/"
    fi
    build gantry-runner "$context"
}

build_launcher() {
    local context=$STAGE/launcher rootfs=$STAGE/launcher/rootfs
    log "cargo build --profile $PROFILE --bin gantry-launcher"
    if [ "$PROFILE" = release ]; then
        cargo build --release --quiet -p gantry --bin gantry-launcher
    else
        cargo build --quiet -p gantry --bin gantry-launcher
    fi
    local binary=$ROOT/target/$PROFILE/gantry-launcher
    mkdir -p "$rootfs/var/lib/gantry-launcher"
    cp images/launcher/Dockerfile "$context/"
    put_base "$rootfs"
    put_busybox "$rootfs"
    put_with_libs "$rootfs" "$binary" /usr/local/bin/gantry-launcher
    # A debug build carries hundreds of MB of debug info the image does not need.
    strip --strip-debug "$rootfs/usr/local/bin/gantry-launcher" 2>/dev/null || true
    build gantry-launcher "$context"
}

for target in "${TARGETS[@]}"; do
    "build_$target"
done
