// Package shim hands out terraform-provider-tls's provider, which lives in an internal package:
// this import path shares the upstream module's prefix, so Go lets it import that package.
package shim

import (
	"github.com/hashicorp/terraform-plugin-framework/provider"
	upstream "github.com/hashicorp/terraform-provider-tls/internal/provider"
)

// NewProvider returns a new instance of terraform-provider-tls.
func NewProvider() provider.Provider {
	return upstream.New()
}
