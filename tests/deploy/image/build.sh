#!/usr/bin/env bash
# Builds the image that stands in for an EC2 instance booted from a worker AMI, for running the
# CloudFormation user data for real. No registry is reachable, so the root file system comes from
# Debian's mirror with debootstrap and is imported into Docker.
#
# It holds what the user data expects of an AMI (docs/deploying-worker-pools.md, "AMI"): systemd as
# PID 1, bash, curl, python3, openssl, ca-certificates and the AWS CLI. The AWS CLI is v1 from PyPI
# at the version pinned in requirements-test.txt, since Debian's is too old to honour
# AWS_ENDPOINT_URL, which points it at moto.
#
# Run it with --stop-signal SIGRTMIN+3 (systemd's clean shutdown); docker import cannot set it.
# usage: build.sh TAG AWSCLI_VERSION PIP
# PIP is the host's pip: it downloads the wheels (the host's network and CA settings apply), and
# the chroot installs them offline. The host's Python and the image's are both Debian 12's 3.11.
set -euo pipefail
tag=$1 awscli_version=$2 pip=$3

work=$(mktemp -d)
trap 'umount -R "$work/root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/root

debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,curl,openssl,procps \
    bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log" >&2; exit 1; }

"$pip" download -q --only-binary :all: -d "$root/tmp/wheels" "awscli==$awscli_version"
mount -t proc proc "$root/proc"
chroot "$root" python3 -m venv /opt/awscli
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" /opt/awscli/bin/pip install -q \
    --disable-pip-version-check --no-index --find-links /tmp/wheels "awscli==$awscli_version"
umount "$root/proc"
rm -rf "$root/tmp/wheels"
ln -s /opt/awscli/bin/aws "$root/usr/local/bin/aws"

# A container boots systemd with no getty, no udev work and nothing that waits on hardware.
for unit in getty.target systemd-udevd.service systemd-udev-trigger.service \
            systemd-resolved.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

tar -C "$root" -c . | docker import \
    -c 'ENV container=docker' -c 'CMD ["/sbin/init"]' \
    - "$tag" >/dev/null
echo "$tag"
