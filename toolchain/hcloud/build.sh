#!/usr/bin/env bash
# Builds pulumi-resource-hcloud into OUT_DIR; VERSION is the pulumi-hcloud release it serves.
set -euo pipefail
cd "$(dirname "$0")"
exec bash ../bridged-provider.sh hcloud github.com/hetznercloud/terraform-provider-hcloud "$1"
