#!/usr/bin/env bash
# Builds the provider written in the build module in the current directory (pulumi-go-provider):
# `native-provider.sh NAME OUT_DIR` writes OUT_DIR/pulumi-resource-NAME; VERSION is the SDK release
# it serves, stamped into main.version.
set -euo pipefail
name=$1 out=$2
: "${VERSION:?}"
# The committed go.mod and go.sum are authoritative: a build never edits them.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"
mkdir -p "$out"
go build -trimpath -ldflags "-w -s -X main.version=$VERSION" -o "$out/pulumi-resource-$name" .
