// Package info describes terraform-provider-tls to the Pulumi Terraform bridge so that the bridged
// provider speaks the schema the published pulumi-tls SDKs were generated from (tokens
// tls:index/<name>:<Name>), with the bridge settings pulumi-tls releases are built with.
package info

import (
	pfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	"github.com/hashicorp/terraform-provider-tls/shim"
)

// Provider returns the bridge's description of tls (a bridged.Describe).
func Provider(version string, metadata []byte, docsDir string) tfbridge.ProviderInfo {
	info := tfbridge.ProviderInfo{
		P:                pfbridge.ShimProvider(shim.NewProvider()),
		Name:             "tls",
		Version:          version,
		Description:      "A Pulumi package to create TLS resources in Pulumi programs.",
		Keywords:         []string{"pulumi", "tls"},
		License:          "Apache-2.0",
		GitHubOrg:        "hashicorp",
		UpstreamRepoPath: docsDir,
		MetadataInfo:     tfbridge.NewProviderMetadata(metadata),
		Python:           &tfbridge.PythonInfo{RespectSchemaVersion: true, PyProject: struct{ Enabled bool }{true}},
		// Both change what the provider answers (state versions, previews), so both are as upstream's.
		EnableZeroDefaultSchemaVersion: true,
		EnableAccurateBridgePreview:    true,
	}
	info.MustComputeTokens(tokens.SingleModule("tls_", "index", tokens.MakeStandard("tls")))
	return info
}
