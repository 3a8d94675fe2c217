// pulumi-resource-command: the command provider the program's remote steps run through, serving
// the pulumi-command SDK's `command:remote:Command`.
package main

import (
	"context"
	"fmt"
	"os"

	p "github.com/pulumi/pulumi-go-provider"
	"github.com/pulumi/pulumi-go-provider/infer"

	"clawhosters.example/toolchain/command/remote"
)

// Stamped by build.sh: the pulumi-command release whose SDK this provider serves.
var version = "0.0.0"

func main() {
	provider, err := infer.NewProviderBuilder().
		WithDisplayName("Command").
		WithDescription("Scripts run on remote hosts over SSH as part of the resource model.").
		WithResources(infer.Resource(&remote.Command{})).
		Build()
	if err == nil {
		err = p.RunProvider(context.Background(), "command", version, remote.KeepUnknownConnection(provider))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
