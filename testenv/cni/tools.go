//go:build tools

// The commands build.sh builds, pinned by go.mod.
package tools

import (
	_ "github.com/containernetworking/cni/cnitool"
	_ "github.com/containernetworking/plugins/plugins/main/ptp"
)
