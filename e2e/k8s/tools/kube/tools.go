//go:build tools

// Package k8stools only records, for `go mod tidy`, which commands
// e2e/k8s/build.sh builds from this module.
package k8stools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
