// Package bridged is what the bridged providers (hcloud, random, tls) share: their cmd/tfgen, which
// generates the Pulumi schema and bridge metadata the plugin embeds, and the plugin's own main.
package bridged

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	pfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	pftfgen "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
)

// Describe gives the bridge's description of a provider. metadata is the bridge-metadata.json that
// schema generation wrote (nil while generating it); docsDir is the upstream module's source tree,
// where generation reads the resource docs (empty at run time, when no docs are read).
type Describe func(version string, metadata []byte, docsDir string) tfbridge.ProviderInfo

// Generate is cmd/tfgen: `VERSION=x.y.z tfgen OUT_DIR UPSTREAM_DIR` writes schema.json (stamped
// with $VERSION) and bridge-metadata.json into OUT_DIR. muxed: the Terraform provider mixes the
// plugin SDK and the plugin framework.
func Generate(name string, describe Describe, muxed bool) {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: VERSION=x.y.z tfgen OUT_DIR UPSTREAM_DIR")
		os.Exit(2)
	}
	out, upstream := os.Args[1], os.Args[2]
	version := os.Getenv("VERSION")

	// The bridge's generator reads its own command line. Examples are skipped: converting them
	// needs the Terraform converter plugin, and they only feed documentation.
	os.Args = []string{os.Args[0], "schema", "--out", out, "--skip-examples"}
	if muxed {
		pftfgen.MainWithMuxer(name, describe(version, nil, upstream))
	} else {
		pftfgen.Main(name, describe(version, nil, upstream))
	}

	if err := stampVersion(filepath.Join(out, "schema.json"), version); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Serve is the plugin's main: the provider with the schema and metadata cmd/tfgen generated.
func Serve(name, version string, describe Describe, schema, metadata []byte, muxed bool) {
	provider := describe(version, metadata, "")
	if muxed {
		pfbridge.MainWithMuxer(context.Background(), name, provider, schema)
		return
	}
	pfbridge.Main(context.Background(), name, provider, pfbridge.ProviderMetadata{PackageSchema: schema})
}

// stampVersion sets the package version in the schema; the generator leaves it out so that its
// output does not depend on the release, but the plugin's GetSchema should report it.
func stampVersion(path, version string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if spec["version"], err = json.Marshal(version); err != nil {
		return err
	}
	if data, err = json.Marshal(spec); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
