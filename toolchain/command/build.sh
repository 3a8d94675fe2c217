#!/usr/bin/env bash
# Builds pulumi-resource-command into OUT_DIR; VERSION is the pulumi-command release whose SDK it
# serves, stamped into main.version.
set -euo pipefail
cd "$(dirname "$0")"
: "${VERSION:?}"
out=$1
# The committed go.mod and go.sum are authoritative: a build never edits them.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"
mkdir -p "$out"
go build -trimpath -ldflags "-w -s -X main.version=$VERSION" -o "$out/pulumi-resource-command" .
