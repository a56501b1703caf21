package caddymodule

import (
	"context"
	"io"
	"time"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// process is the handler's view of one started, single-use container:
// what a request needs to feed it, read it and end it. *spawner.Instance
// is one (through instanceProcess); the handler's unit tests use a fake.
type process interface {
	// ContainerID names the container in logs and placeholders.
	ContainerID() string
	// Begin sends the request's environment; the program then starts.
	Begin(env []string) error
	Stdin() io.Writer
	CloseStdin(ctx context.Context) error
	// Stdout ends when the program exits or is killed.
	Stdout() io.Reader
	Stderr() io.Reader
	// Done is closed once ExitCode is known.
	Done() <-chan struct{}
	ExitCode() uint32
	OOMKilled() bool
	// Usage is what the program used since Begin (false: unknown); read
	// it before release.
	Usage() (spawner.Usage, bool)
	// Kill kills the program now; safe to call at any time, more than once.
	Kill(ctx context.Context)
}

// containerSource hands out the containers of one route and takes them
// back after their one request.
type containerSource interface {
	// acquire returns a started container, warm from the pool or cold. It
	// fails with errImageNotReady when the image isn't ready in time.
	acquire(ctx context.Context) (p process, warm bool, err error)
	// release tears p down, off the request path.
	release(p process)
}

// instanceProcess is a spawner.Instance as a process.
type instanceProcess struct{ *spawner.Instance }

func (p instanceProcess) ContainerID() string { return p.ID }

// routeContainers is a route's pool as a containerSource, with the app's
// settings of the config that serves it.
type routeContainers struct {
	route *route
	app   *App
}

func (c routeContainers) acquire(ctx context.Context) (process, bool, error) {
	inst, warm, err := c.route.acquire(ctx, time.Duration(c.app.ImageWait))
	if err != nil {
		return nil, false, err
	}
	return instanceProcess{inst}, warm, nil
}

// idle is how many warm containers the route's pool holds.
func (c routeContainers) idle() int { return c.route.idle() }

func (c routeContainers) release(p process) {
	c.route.release(c.app.spawner, p.(instanceProcess).Instance)
}

// Interface guards
var (
	_ process         = instanceProcess{}
	_ containerSource = routeContainers{}
)
