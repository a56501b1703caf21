package spawner

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/pkg/cio"
)

// openFIFOs creates the stdio FIFOs of container id in dir and opens our
// ends of them. The caller owns the result (Cancel, Close).
func openFIFOs(ctx context.Context, dir, id string) (*cio.DirectIO, error) {
	fifos, err := cio.NewFIFOSetInDir(dir, id, false)
	if err != nil {
		return nil, fmt.Errorf("creating FIFOs for %s: %w", id, err)
	}
	dio, err := cio.NewDirectIO(ctx, fifos)
	if err != nil {
		fifos.Close()
		return nil, fmt.Errorf("opening FIFOs for %s: %w", id, err)
	}
	return dio, nil
}
