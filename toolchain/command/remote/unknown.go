package remote

import (
	"context"

	p "github.com/pulumi/pulumi-go-provider"
)

// KeepUnknownConnection leaves a connection that is not known yet (a preview before its server
// exists) unknown. infer would decode it into an empty Connection and fill in the defaults, and the
// update plan saved by that preview would then demand those defaults of the connection the `up`
// really has: `up --plan` fails with "properties changed: ++connection".
func KeepUnknownConnection(provider p.Provider) p.Provider {
	check := provider.Check
	provider.Check = func(ctx context.Context, req p.CheckRequest) (p.CheckResponse, error) {
		if connection, ok := req.Inputs.GetOk("connection"); ok && connection.IsComputed() {
			return p.CheckResponse{Inputs: req.Inputs}, nil
		}
		return check(ctx, req)
	}
	return provider
}
