// Package info describes terraform-provider-random to the Pulumi Terraform bridge so that the
// bridged provider speaks the schema the published pulumi-random SDKs were generated from:
// tokens random:index/random<Name>:Random<Name>, which keep upstream's "random" in the name.
package info

import (
	"context"
	"errors"

	pfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/terraform-providers/terraform-provider-random/shim"
)

// Provider returns the bridge's description of random (a bridged.Describe).
func Provider(version string, metadata []byte, docsDir string) tfbridge.ProviderInfo {
	info := tfbridge.ProviderInfo{
		P:                pfbridge.ShimProvider(shim.NewProvider()),
		Name:             "random",
		Version:          version,
		Description:      "A Pulumi package to safely use randomness in Pulumi programs.",
		Keywords:         []string{"pulumi", "random"},
		License:          "Apache-2.0",
		GitHubOrg:        "hashicorp",
		UpstreamRepoPath: docsDir,
		MetadataInfo:     tfbridge.NewProviderMetadata(metadata),
		Resources: map[string]*tfbridge.ResourceInfo{
			"random_bytes": {ComputeID: bytesID},
		},
		Python: &tfbridge.PythonInfo{RespectSchemaVersion: true, PyProject: struct{ Enabled bool }{true}},
	}

	// random_password becomes RandomPassword (module index), not Password.
	standard := tokens.MakeStandard("random")
	info.MustComputeTokens(tokens.SingleModule("random_", "index", func(module, name string) (string, error) {
		return standard(module, "Random"+name)
	}))
	info.MustApplyAutoAliases()
	return info
}

// bytesID names a random_bytes resource by its value, as upstream's import does: the resource has
// no id attribute of its own. The value is a secret, but an id cannot be one, so it is unwrapped.
func bytesID(_ context.Context, state resource.PropertyMap) (resource.ID, error) {
	value, ok := state["base64"]
	if ok && value.IsSecret() {
		value = value.SecretValue().Element
	}
	if !ok || !value.IsString() {
		return "", errors.New("random_bytes state has no base64 string to use as its id")
	}
	return resource.ID(value.StringValue()), nil
}
