// Command tfgen writes the provider's Pulumi schema and bridge metadata (`tfgen schema --out DIR`),
// which the provider binary embeds.
package main

import (
	"os"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"

	"clawhosters.example/toolchain/random/info"
)

func main() {
	tfgen.Main("random", info.Provider(os.Getenv("VERSION"), nil))
}
