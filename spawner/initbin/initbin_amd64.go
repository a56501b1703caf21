package initbin

import _ "embed"

//go:embed spawn-init-amd64
var embedded string
