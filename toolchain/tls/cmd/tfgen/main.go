// Command tfgen generates what pulumi-resource-tls embeds: the Pulumi package schema
// (schema.json, stamped with $VERSION) and the bridge metadata (bridge-metadata.json).
//
// Usage: VERSION=x.y.z tfgen OUT_DIR UPSTREAM_DIR, where UPSTREAM_DIR is the source tree of the
// terraform-provider-tls module, whose docs give the schema its descriptions.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	pftfgen "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"

	"clawhosters.example/toolchain/tls/info"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: VERSION=x.y.z tfgen OUT_DIR UPSTREAM_DIR")
		os.Exit(2)
	}
	out, upstream := os.Args[1], os.Args[2]
	version := os.Getenv("VERSION")

	// The bridge's generator reads its own command line. Examples are skipped: converting them
	// needs the Terraform converter plugin, and they only feed documentation.
	os.Args = []string{os.Args[0], "schema", "--out", out, "--skip-examples"}
	pftfgen.Main("tls", info.Provider(version, nil, upstream))

	if err := stampVersion(filepath.Join(out, "schema.json"), version); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
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
