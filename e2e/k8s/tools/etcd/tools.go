//go:build tools

// Package etcdtools only records, for `go mod tidy`, which command
// e2e/k8s/build.sh builds from this module.
package etcdtools

import (
	_ "go.etcd.io/etcd/server/v3"
)
