package initbin

import _ "embed"

// embedded is spawn-init for linux/amd64, selected by this file's name.
//
//go:embed spawn-init-amd64
var embedded string
