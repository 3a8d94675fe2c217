// Command pulumi-resource-tls is the tls resource plugin: terraform-provider-tls served over the
// Pulumi provider protocol by the Terraform bridge.
package main

import (
	_ "embed"

	"clawhosters.example/toolchain/bridged"
	"clawhosters.example/toolchain/tls/info"
)

// Set by build.sh (-ldflags -X); the bridge refuses to serve without a semver version.
var version string

// Both files are written by cmd/tfgen during the build and mapped into this package with
// `go build -overlay` (see bridged-provider.sh); they never exist in the source tree.
var (
	//go:embed schema.json
	schema []byte
	//go:embed bridge-metadata.json
	metadata []byte
)

func main() {
	bridged.Serve("tls", version, info.Provider, schema, metadata, false)
}
