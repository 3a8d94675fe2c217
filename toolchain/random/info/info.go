// Package info describes the random provider to the Terraform bridge: terraform-provider-random
// (plugin framework) with the tokens the pulumi-random SDKs use, which keep the "Random" prefix in
// every name (random:index/randomPassword:RandomPassword).
package info

import (
	pfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	"github.com/terraform-providers/terraform-provider-random/shim"
)

// Provider returns the bridge's description of random at this version; metadata is the
// bridge-metadata.json that schema generation wrote (nil while generating it).
func Provider(version string, metadata []byte) tfbridge.ProviderInfo {
	info := tfbridge.ProviderInfo{
		P:            pfbridge.ShimProvider(shim.NewProvider()),
		Name:         "random",
		Description:  "Randomness for Pulumi programs, bridged from terraform-provider-random.",
		License:      "Apache-2.0",
		Version:      version,
		MetadataInfo: tfbridge.NewProviderMetadata(metadata),
		Python:       &tfbridge.PythonInfo{RespectSchemaVersion: true},
	}
	standard := tokens.MakeStandard("random")
	info.MustComputeTokens(tokens.SingleModule("random_", "index", func(module, name string) (string, error) {
		return standard(module, "Random"+name)
	}))
	return info
}
