package spawner

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
)

// Defaults for a function's limits, used when a FunctionSpec leaves them zero.
const (
	DefaultMemoryBytes = 256 << 20
	DefaultPids        = 128
	// DefaultRuntime is containerd's runc shim.
	DefaultRuntime = "io.containerd.runc.v2"
	// InitPath is where our init is mounted inside every container.
	InitPath = "/.spawn/init"
)

// Config is what a Spawner needs to make containers. All fields but
// RuncBinary are required.
type Config struct {
	Client      *client.Client
	Namespace   string
	Snapshotter string
	Runtime     string
	// RuncBinary, when set, is the runc executable the shim runs.
	RuncBinary string
	// InitBinary is the host path of spawn-init, bind-mounted read-only.
	InitBinary string
	// FIFODir holds the stdio FIFOs of our tasks.
	FIFODir string
	// Owner labels everything we create (see NewOwnerID).
	Owner  string
	Logger *zap.Logger
}

// Function describes one route's containers: the image and everything that
// goes into the OCI spec. It is immutable once in use.
type Function struct {
	// Name is the route name, used in container IDs and labels; [a-z0-9-].
	Name string
	// Key identifies everything that changes the container (see pool keys).
	Key   string
	Image *snapshots.Ready
	// Entrypoint and Args override the image's ENTRYPOINT and CMD when set.
	Entrypoint []string
	Args       []string
	// Env is added to the image's environment (route wins).
	Env        []string
	WorkingDir string
	// MemoryBytes, Pids: limits; zero means the defaults above.
	MemoryBytes int64
	Pids        int64
}

func (f *Function) validate() error {
	if f.Name == "" {
		return fmt.Errorf("function has no name")
	}
	if f.Image == nil || f.Image.Image == nil {
		return fmt.Errorf("function %s: %w", f.Name, ErrImageNotReady)
	}
	return nil
}
