// Command tfgen generates what pulumi-resource-hcloud embeds: the Pulumi package schema and the
// bridge metadata (toolchain/bridged).
package main

import (
	"clawhosters.example/toolchain/bridged"
	"clawhosters.example/toolchain/hcloud/info"
)

func main() {
	bridged.Generate("hcloud", info.Provider, true)
}
