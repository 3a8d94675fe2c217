// Command pulumi-resource-random is the random resource plugin.
package main

import (
	"context"
	_ "embed"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"

	"clawhosters.example/toolchain/random/info"
)

// Set at build time.
var version string

// Written by the build (cmd/tfgen) before compiling; never committed.
//
//go:embed schema-embed.json
var schema []byte

//go:embed bridge-metadata.json
var metadata []byte

func main() {
	tfbridge.Main(context.Background(), "random", info.Provider(version, metadata), tfbridge.ProviderMetadata{PackageSchema: schema})
}
