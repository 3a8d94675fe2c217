//go:build tools

// Package seaweedfs pins SeaweedFS as a dependency of this build module: its go.mod has a replace
// directive, so `go install …@version` refuses it; `go build` of its main package from here works
// (the go-bip39 replace below repeats upstream's).
package seaweedfs

import _ "github.com/seaweedfs/seaweedfs/weed"
