#!/usr/bin/env bash
# Builds pulumi-resource-tls into OUT_DIR; VERSION is the pulumi-tls release whose SDK it serves.
set -euo pipefail
cd "$(dirname "$0")"
exec bash ../native-provider.sh tls "$1"
