//go:build tools

// Package toolchain pins the Pulumi CLI as a dependency of this build module: the CLI's own
// go.mod has replace directives, so `go install …@version` refuses it; `go build` of its main
// package from here works (the clipboard replace below repeats the CLI's).
package toolchain

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
