//go:build !linux || !(amd64 || arm64)

package initbin

// embedded is empty: no spawn-init is generated for this GOOS/GOARCH.
// Containers run only on Linux, and run the host's architecture.
const embedded = ""
