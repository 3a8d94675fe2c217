// Package shim hands out terraform-provider-random's provider, which lives in an internal package:
// this import path shares the upstream module's prefix, so Go lets it import that package.
package shim

import (
	"github.com/hashicorp/terraform-plugin-framework/provider"
	upstream "github.com/terraform-providers/terraform-provider-random/internal/provider"
)

// NewProvider returns a new instance of terraform-provider-random.
func NewProvider() provider.Provider {
	return upstream.New()
}
