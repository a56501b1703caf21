//go:build !amd64

package initbin

// embedded is empty: no spawn-init is generated for this GOARCH yet.
const embedded = ""
