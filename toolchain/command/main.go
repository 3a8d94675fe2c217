// pulumi-resource-command: the command provider the program's remote steps run through. It serves
// `command:remote:Command` with the inputs, outputs and behaviour of pulumi-command 1.2.1, on the
// same pulumi-go-provider release, so every answer to the engine is upstream's (tests/providers
// replays upstream's recorded answers to it).
package main

import (
	"context"
	"fmt"
	"os"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"
	"github.com/pulumi/pulumi-go-provider/middleware/schema"

	"clawhosters.example/toolchain/command/remote"
)

// Stamped by build.sh: the pulumi-command release whose SDK this provider serves.
var version = "0.0.0"

func main() {
	provider := infer.Provider(infer.Options{
		Metadata: schema.Metadata{
			DisplayName: "Command",
			Description: "Scripts run on remote hosts over SSH as part of the resource model.",
		},
		Resources: []infer.InferredResource{infer.Resource(&remote.Command{})},
	})
	if err := p.RunProvider(context.Background(), "command", version, provider); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %s", err.Error())
		os.Exit(1)
	}
}
