#!/usr/bin/env bash
# Builds pulumi-resource-tls into OUT_DIR; VERSION is the pulumi-tls release it serves.
set -euo pipefail
cd "$(dirname "$0")"
exec bash ../bridged-provider.sh tls github.com/hashicorp/terraform-provider-tls "$1"
