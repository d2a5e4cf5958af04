//go:build tools

// Package tools pins the command this module builds, so that `go mod tidy` keeps its requirements.
package tools

import _ "github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller"
