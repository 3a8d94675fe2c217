// Command tfgen generates what pulumi-resource-tls embeds: the Pulumi package schema and the
// bridge metadata (toolchain/bridged).
package main

import (
	"clawhosters.example/toolchain/bridged"
	"clawhosters.example/toolchain/tls/info"
)

func main() {
	bridged.Generate("tls", info.Provider, false)
}
