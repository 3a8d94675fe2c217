// Package info describes terraform-provider-hcloud to the Pulumi Terraform bridge so that the
// bridged provider speaks the schema the published pulumi-hcloud SDKs were generated from:
// tokens hcloud:index/<camelName>:<PascalName>, string ids, the provider's own config keys.
package info

import (
	"context"

	"github.com/hetznercloud/terraform-provider-hcloud/hcloud"
	pfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	shim "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Provider returns the bridge's description of hcloud (a bridged.Describe).
func Provider(version string, metadata []byte, docsDir string) tfbridge.ProviderInfo {
	// Upstream serves its resources from two Terraform SDKs (SDKv2 and the plugin framework)
	// behind one muxed server; the bridge muxes the same two halves.
	p := pfbridge.MuxShimWithPF(context.Background(), shimv2.NewProvider(hcloud.Provider()), hcloud.NewPluginProvider())
	info := tfbridge.ProviderInfo{
		P:                p,
		Name:             "hcloud",
		Version:          version,
		Description:      "A Pulumi package for creating and managing Hetzner Cloud resources.",
		Keywords:         []string{"pulumi", "hcloud"},
		License:          "Apache-2.0",
		GitHubOrg:        "hetznercloud",
		UpstreamRepoPath: docsDir,
		MetadataInfo:     tfbridge.NewProviderMetadata(metadata),
		Resources: map[string]*tfbridge.ResourceInfo{
			"hcloud_server": {PreCheckCallback: pinServerNetworkAliasIPs},
		},
		Python: &tfbridge.PythonInfo{RespectSchemaVersion: true, PyProject: struct{ Enabled bool }{true}},
	}

	// Plugin-framework resources have numeric ids; Pulumi ids are strings, as the SDKs expect.
	p.ResourcesMap().Range(func(name string, r shim.Resource) bool {
		if id, ok := r.Schema().GetOk("id"); ok && id.Type() != shim.TypeString {
			ri := info.Resources[name]
			if ri == nil {
				ri = &tfbridge.ResourceInfo{}
				info.Resources[name] = ri
			}
			if ri.Fields == nil {
				ri.Fields = map[string]*tfbridge.SchemaInfo{}
			}
			ri.Fields["id"] = &tfbridge.SchemaInfo{Type: "string"}
		}
		return true
	})

	info.MustComputeTokens(tokens.SingleModule("hcloud_", "index", tokens.MakeStandard("hcloud")))
	info.MustApplyAutoAliases()
	info.SetAutonaming(255, "-")
	return info
}

// pinServerNetworkAliasIPs gives every server network block an explicit alias_ips list: with the
// attribute omitted, upstream later plans to detach and re-attach the network (issue 650 of
// terraform-provider-hcloud), and its documented workaround is an empty list.
func pinServerNetworkAliasIPs(
	_ context.Context, config, _ resource.PropertyMap,
) (resource.PropertyMap, error) {
	networks, ok := config["networks"]
	if !ok || !networks.IsArray() {
		return config, nil
	}
	for _, network := range networks.ArrayValue() {
		if !network.IsObject() {
			continue
		}
		block := network.ObjectValue()
		if _, present := block["aliasIps"]; !present {
			block["aliasIps"] = resource.NewProperty([]resource.PropertyValue{})
		}
	}
	return config, nil
}
