// Command tfgen generates what pulumi-resource-random embeds: the Pulumi package schema and the
// bridge metadata (toolchain/bridged).
package main

import (
	"clawhosters.example/toolchain/bridged"
	"clawhosters.example/toolchain/random/info"
)

func main() {
	bridged.Generate("random", info.Provider, false)
}
