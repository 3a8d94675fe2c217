package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// listDistributions prints the distributions the environment's Python sees (of a name installed
// twice on sys.path, the one it imports), each with the path of the pulumi-plugin.json that a
// Pulumi package ships at the top of its package directory, if it has one.
const listDistributions = `
import importlib.metadata, json, re
seen, found = set(), []
for dist in importlib.metadata.distributions():
    name = dist.metadata.get("Name")
    key = re.sub(r"[-_.]+", "-", name or "").lower()
    if not key or key in seen:
        continue
    seen.add(key)
    marker = next((f for f in dist.files or () if len(f.parts) == 2 and f.name == "pulumi-plugin.json"), None)
    path = dist.locate_file(marker) if marker else None
    found.append({"name": name, "version": dist.version, "plugin": str(path) if path and path.exists() else ""})
print(json.dumps(found))
`

// Packages named pulumi-* that have no plugin and ship no pulumi-plugin.json saying so.
var withoutPlugin = map[string]bool{"pulumi-policy": true, "pulumi-esc-sdk": true}

type distribution struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Plugin  string `json:"plugin"`
}

// GetRequiredPackages names the resource plugins of the Pulumi packages installed in the program's
// environment, so that the engine can load (or report missing) the providers before the program runs.
func (h *languageHost) GetRequiredPackages(
	ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	packages, err := requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: packages}, nil
}

// GetRequiredPlugins is the older form of GetRequiredPackages, without parameterization.
func (h *languageHost) GetRequiredPlugins(
	ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	packages, err := requiredPackages(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	var plugins []*pulumirpc.PluginDependency
	for _, p := range packages {
		if p.GetParameterization() == nil {
			plugins = append(plugins, &pulumirpc.PluginDependency{
				Name: p.GetName(), Kind: p.GetKind(), Version: p.GetVersion(), Server: p.GetServer(),
			})
		}
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, nil
}

func requiredPackages(ctx context.Context, info *pulumirpc.ProgramInfo) ([]*pulumirpc.PackageDependency, error) {
	_, tc, err := resolve(info, false)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	dists, err := distributions(ctx, tc)
	if err != nil {
		return nil, err
	}
	var packages []*pulumirpc.PackageDependency
	for _, dist := range dists {
		pkg, err := packageDependency(dist)
		if err != nil {
			return nil, err
		}
		if pkg != nil {
			packages = append(packages, pkg)
		}
	}
	return packages, nil
}

func distributions(ctx context.Context, tc toolchain.Toolchain) ([]distribution, error) {
	cmd, err := tc.Command(ctx, "-c", listDistributions)
	if err != nil {
		return nil, err
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing the packages of the Python environment (%s): %w", cmd.Path, err)
	}
	var dists []distribution
	if err := json.Unmarshal(out, &dists); err != nil {
		return nil, fmt.Errorf("reading the package list of the Python environment: %w", err)
	}
	return dists, nil
}

// packageDependency is the plugin a distribution needs, or nil if it is not a Pulumi package with
// a resource plugin. pulumi-plugin.json wins; without one, a package named pulumi-NAME is taken
// to need plugin NAME at the package's version.
func packageDependency(dist distribution) (*pulumirpc.PackageDependency, error) {
	name := normalizedName(dist.Name)
	var meta plugin.PulumiPluginJSON
	if dist.Plugin != "" {
		read, err := plugin.LoadPulumiPluginJSON(dist.Plugin)
		if err != nil {
			return nil, fmt.Errorf("reading %s of package %s: %w", dist.Plugin, dist.Name, err)
		}
		if !read.Resource {
			return nil, nil
		}
		meta = *read
	} else if !strings.HasPrefix(name, "pulumi-") || withoutPlugin[name] {
		return nil, nil
	}

	if meta.Name == "" {
		meta.Name = strings.TrimPrefix(name, "pulumi-")
	}
	if meta.Version == "" {
		v, ok := pluginVersion(dist.Version)
		if !ok {
			// A plugin version cannot be guessed from every PEP 440 version; leave the choice to the engine.
			logging.V(5).Infof("no plugin version for package %s %s", dist.Name, dist.Version)
			return nil, nil
		}
		meta.Version = v
	}
	if !strings.HasPrefix(meta.Version, "v") {
		meta.Version = "v" + meta.Version
	}
	return &pulumirpc.PackageDependency{
		Name:             meta.Name,
		Kind:             "resource",
		Version:          meta.Version,
		Server:           meta.Server,
		Parameterization: parameterization(meta.Parameterization),
		Extension:        parameterization(meta.ExtensionParameterization),
	}, nil
}

func parameterization(p *plugin.PulumiParameterizationJSON) *pulumirpc.PackageParameterization {
	if p == nil {
		return nil
	}
	return &pulumirpc.PackageParameterization{Name: p.Name, Version: p.Version, Value: p.Value}
}

var nameSeparators = regexp.MustCompile(`[-_.]+`)

// PEP 503 name normalization.
func normalizedName(name string) string {
	return strings.ToLower(nameSeparators.ReplaceAllString(name, "-"))
}

var releaseVersion = regexp.MustCompile(`^(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:(a|b|rc)(\d+))?$`)

// pluginVersion turns the PEP 440 versions Pulumi publishes (1.2, 1.2.3, 1.2.3a4, 1.2.3b4,
// 1.2.3rc4) into the semver of the matching plugin (1.2.0, 1.2.3, 1.2.3-alpha.4, ...). Other
// forms (epochs, four parts, post and dev releases) have no dependable plugin version.
func pluginVersion(pep440 string) (string, bool) {
	m := releaseVersion.FindStringSubmatch(pep440)
	if m == nil {
		return "", false
	}
	parts := m[1:4]
	for i, part := range parts {
		if part == "" {
			parts[i] = "0"
		}
	}
	v := strings.Join(parts, ".")
	if m[4] != "" {
		v += "-" + map[string]string{"a": "alpha", "b": "beta", "rc": "rc"}[m[4]] + "." + m[5]
	}
	return v, true
}
