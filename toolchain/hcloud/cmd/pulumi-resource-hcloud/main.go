// Command pulumi-resource-hcloud is the hcloud resource plugin: terraform-provider-hcloud served over the
// Pulumi provider protocol by the Terraform bridge.
package main

import (
	_ "embed"

	"clawhosters.example/toolchain/bridged"
	"clawhosters.example/toolchain/hcloud/info"
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
	bridged.Serve("hcloud", version, info.Provider, schema, metadata, true)
}
