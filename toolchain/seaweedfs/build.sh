#!/usr/bin/env bash
# Builds SeaweedFS's `weed` into OUT_DIR as upstream's release binary is built (CGO off, `-s -w`, the
# commit stamped, no extra storage backends); VERSION is the release the pinned commit reports, and
# the build fails if the binary reports another.
set -euo pipefail
out=$1
: "${VERSION:?}"
module=github.com/seaweedfs/seaweedfs
# The pin is a pseudo-version (upstream's tags are not semantic versions); its tail is the commit.
pseudo=$(go list -m -f '{{.Version}}' "$module")
go build -ldflags "-s -w -X $module/weed/util/version.COMMIT=${pseudo##*-}" -o "$out/weed" "$module/weed"
reported=$("$out/weed" version 2>/dev/null | head -n 1)  # without its advertisement on stderr
grep -qwF -- "$VERSION" <<<"$reported" || { echo "build.sh: weed reports '$reported', not $VERSION" >&2; exit 1; }
