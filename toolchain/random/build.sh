#!/usr/bin/env bash
# Builds pulumi-resource-random into OUT_DIR: generates the Pulumi schema and bridge metadata with
# cmd/tfgen, then compiles the provider with both embedded. Generated files stay in a scratch copy.
set -euo pipefail
out=$1
: "${VERSION:?}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r . "$work/src"
cd "$work/src"
go build -o "$work/tfgen" ./cmd/tfgen
PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true PULUMI_HOME="$work/home" \
    "$work/tfgen" schema --out "$work/schema"
cp "$work/schema/schema.json" cmd/pulumi-resource-random/schema-embed.json
cp "$work/schema/bridge-metadata.json" cmd/pulumi-resource-random/bridge-metadata.json
go build -ldflags "-w -s -X main.version=${VERSION}" -o "$out/pulumi-resource-random" ./cmd/pulumi-resource-random
