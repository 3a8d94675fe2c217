#!/usr/bin/env bash
# Builds the bridged provider of the build module in the current directory: `bridged-provider.sh NAME
# UPSTREAM_MODULE OUT_DIR` writes OUT_DIR/pulumi-resource-NAME; VERSION is the SDK release it serves.
# cmd/tfgen generates the Pulumi schema and bridge metadata into a scratch directory, then the
# provider is compiled with both embedded, mapped in with -overlay: nothing is written to the tree.
set -euo pipefail
name=$1 upstream_module=$2 out=$3
: "${VERSION:?}"
# The committed go.mod and go.sum are authoritative: a build never edits them.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

go build -trimpath -o "$work/tfgen" ./cmd/tfgen
upstream=$(go list -m -f '{{.Dir}}' "$upstream_module")
# Run outside the checkout with a private Pulumi home: the generator may leave files behind.
(cd "$work" && PULUMI_HOME="$work/home" PULUMI_SKIP_UPDATE_CHECK=true \
    "$work/tfgen" "$work/gen" "$upstream" >"$work/tfgen.log" 2>&1) || { cat "$work/tfgen.log" >&2; exit 1; }

main=cmd/pulumi-resource-$name
printf '{"Replace":{"%s":"%s","%s":"%s"}}\n' \
    "$PWD/$main/schema.json" "$work/gen/schema.json" \
    "$PWD/$main/bridge-metadata.json" "$work/gen/bridge-metadata.json" >"$work/overlay.json"
mkdir -p "$out"
go build -trimpath -overlay "$work/overlay.json" -ldflags "-X main.version=$VERSION" \
    -o "$out/pulumi-resource-$name" "./$main"
