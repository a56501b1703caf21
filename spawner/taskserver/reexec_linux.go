package taskserver

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// EnvConfig names the environment variable that turns a process started
// from the binary this package is linked into (Caddy, with caddy-spawn)
// into a task server: its value is the JSON of a ProcessConfig. So the task
// server needs no binary of its own, and an xcaddy build carries it.
const EnvConfig = "CADDY_SPAWN_TASK_SERVER"

// ProcessConfig is what a task server process is started with.
type ProcessConfig struct {
	Socket   string `json:"socket"`
	StateDir string `json:"state_dir"`
	Crun     string `json:"crun"`
	Events   string `json:"events"`
	Debug    bool   `json:"debug,omitempty"`
}

func init() {
	if v, ok := os.LookupEnv(EnvConfig); ok {
		os.Exit(runProcess(v))
	}
}

// runProcess is the task server process: it serves until SIGTERM or until
// its parent dies, then exits.
func runProcess(conf string) int {
	var pc ProcessConfig
	if err := json.Unmarshal([]byte(conf), &pc); err != nil {
		fmt.Fprintf(os.Stderr, "task server: bad %s: %v\n", EnvConfig, err)
		return 2
	}
	_ = os.Unsetenv(EnvConfig)
	// Die with the process that started us, whatever happens to it.
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	level := zapcore.InfoLevel
	if pc.Debug {
		level = zapcore.DebugLevel
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(os.Stderr), level)).
		Named("spawn.taskserver")
	srv, err := New(Config{Socket: pc.Socket, StateDir: pc.StateDir, Crun: pc.Crun, Events: pc.Events, Logger: logger})
	if err != nil {
		logger.Error("starting task server", zap.Error(err))
		return 1
	}
	// Containers left by a previous server of this state directory have
	// no server any more: remove them before serving.
	srv.SweepLeftovers()
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	if err := srv.Serve(ctx); err != nil {
		logger.Error("serving task API", zap.Error(err))
		return 1
	}
	return 0
}
