#!/usr/bin/env bash
# Builds pulumi-resource-command into OUT_DIR; VERSION is the pulumi-command release whose SDK it serves.
set -euo pipefail
cd "$(dirname "$0")"
exec bash ../native-provider.sh command "$1"
