#!/usr/bin/env bash
# Builds the Python language host into OUT_DIR (VERSION is the Pulumi SDK version it reports), with
# the two Python scripts of that SDK that must sit beside it: pulumi-language-python-exec, which runs
# programs, and pulumi-resource-pulumi-python, the dynamic-provider plugin.
set -euo pipefail
: "${1:?usage: build.sh OUT_DIR}" "${VERSION:?}"
mkdir -p "$1"
out=$(cd "$1" && pwd)
cd "$(dirname "$0")"
# go.sum is authoritative: nothing is re-resolved at build time.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"
go build -trimpath -ldflags "-X main.version=${VERSION}" -o "$out/pulumi-language-python" .
# The scripts come from the same sdk/v3 module version that go.mod pins.
sdk=$(go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)
[ -d "$sdk/python" ] || { echo "build.sh: no sdk/v3 module in the module cache at '$sdk'" >&2; exit 1; }
install -m 755 "$sdk/python/cmd/pulumi-language-python-exec" "$out/pulumi-language-python-exec"
install -m 755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$out/pulumi-resource-pulumi-python"
