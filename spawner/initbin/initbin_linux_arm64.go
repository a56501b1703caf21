package initbin

import _ "embed"

// embedded is spawn-init for linux/arm64, selected by this file's name.
//
//go:embed spawn-init-arm64
var embedded string
