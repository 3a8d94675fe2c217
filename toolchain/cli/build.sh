#!/usr/bin/env bash
# Builds the Pulumi CLI into OUT_DIR with the flags and version string of upstream's release build.
set -euo pipefail
out=$1
: "${VERSION:?}"
go build -tags osusergo,grpcnotrace \
    -ldflags "-w -s -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v${VERSION}" \
    -o "$out/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
