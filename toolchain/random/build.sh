#!/usr/bin/env bash
# Builds pulumi-resource-random into OUT_DIR; VERSION is the pulumi-random release it serves.
set -euo pipefail
cd "$(dirname "$0")"
exec bash ../bridged-provider.sh random github.com/terraform-providers/terraform-provider-random "$1"
