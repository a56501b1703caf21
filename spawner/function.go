package spawner

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	ctrsnapshots "github.com/containerd/containerd/v2/core/snapshots"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
)

// Defaults for a function's limits, used when a Function leaves them zero.
const (
	DefaultMemoryBytes = 256 << 20
	DefaultPids        = 128
	// DefaultCPUs is the CPU quota: one CPU's worth of time per period.
	DefaultCPUs = 1.0
	// DefaultNofile is RLIMIT_NOFILE (soft and hard), as containerd's and
	// Docker's default spec have it.
	DefaultNofile = 1024
	// CPUPeriod is the CFS period, in microseconds, the CPU quota is
	// measured over (100 ms, the kernel's default).
	CPUPeriod = 100_000
	// MinCPUs and MaxCPUs bound Function.CPUs: the kernel refuses a quota
	// under 1 ms per period.
	MinCPUs = 0.01
	MaxCPUs = 1024
	// MaxNofile is the largest RLIMIT_NOFILE, the kernel's default
	// fs.nr_open.
	MaxNofile = 1 << 20
	// DefaultDiskBytes bounds a container's writable layer unless the
	// route says otherwise: 64 MiB.
	DefaultDiskBytes = 64 << 20
	// FsizeMargin is how much RLIMIT_FSIZE exceeds the writable layer's
	// bound: a file that fills the layer ends in ENOSPC, not SIGXFSZ.
	FsizeMargin = 1 << 20
	// DiskBytesPerInode sets the inode bound of the writable layer.
	DiskBytesPerInode = 16 << 10
	// AnnotationDisk carries DiskBytes in the spec, for the task server.
	AnnotationDisk = "dev.caddy-spawn/disk"
	// TmpfsBytes is the size of the tmpfs at /tmp of a read-only container.
	// Its pages count against the memory limit too.
	TmpfsBytes = 64 << 20
	// DefaultRuntime is containerd's runc shim.
	DefaultRuntime = "io.containerd.runc.v2"
	// OOMScoreAdj is the OOM killer adjustment of every function process:
	// the highest, so functions are the first to go when the host runs out
	// of memory.
	OOMScoreAdj = 1000
	// InitPath is where our init is mounted inside every container.
	InitPath = "/.spawn/init"
	// UsernsSize is how many user and group IDs a user namespace maps:
	// container IDs 0 to 65535.
	UsernsSize = 1 << 16
	// DefaultUsernsHostID is the first host ID of a user namespace's
	// range unless the function says otherwise: 0x70000000, far above the
	// IDs of host users and the subordinate ranges tools hand out from
	// 100000.
	DefaultUsernsHostID = 0x70000000
	// MinUsernsHostID keeps the range clear of the host's own users and
	// groups (0 to 65535).
	MinUsernsHostID = 1 << 16
	// MaxUsernsHostID is the last first ID whose range still ends below
	// the invalid ID 2^32-1.
	MaxUsernsHostID = 1<<32 - 1 - UsernsSize
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
	Owner string
	// FastPath, when set, runs containers on our task server instead of
	// a shim per container (see StartFastPath).
	FastPath *FastPath
	// MaxContainers bounds the containers this Spawner has at once, pooled
	// and serving; 0 is unlimited. See WithSlotWait.
	MaxContainers int
	Logger        *zap.Logger
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
	// MemoryBytes, Pids: limits; zero means the defaults above. Swap is
	// limited to MemoryBytes too: no swapping past the limit.
	MemoryBytes int64
	Pids        int64
	// CPUs is the CPU quota in CPUs (a CFS quota of CPUs × CPUPeriod);
	// zero means DefaultCPUs.
	CPUs float64
	// Nofile is RLIMIT_NOFILE, soft and hard; zero means DefaultNofile.
	Nofile uint64
	// HostNetwork runs the container in the host's network namespace (with
	// the host's /etc/hosts and /etc/resolv.conf) instead of a fresh one
	// that has only a loopback device.
	HostNetwork bool
	// ReadOnly makes the root filesystem read-only and mounts a tmpfs of
	// TmpfsBytes at /tmp.
	ReadOnly bool
	// DiskBytes bounds the container's writable layer (bytes, and inodes:
	// one per DiskBytesPerInode); zero means DefaultDiskBytes. On the fast
	// path it is a size-capped tmpfs under the overlay, whose pages also
	// count against MemoryBytes; the stock path does not bound it.
	DiskBytes int64
	// User, when set, is the numeric user the init and the program run as,
	// instead of the image's.
	User *User
	// Userns, when set, runs the container in a user namespace of its own:
	// its IDs 0 to UsernsSize-1 are the host's Userns.HostID onwards, so
	// its root is an unprivileged user of the host. The image's files are
	// seen through id-mapped mounts (the overlay snapshotter's "remap-ids"
	// capability: kernel 5.19 or later), not copied. It can't be combined
	// with HostNetwork.
	Userns *Userns
}

// Userns is a user namespace's mapping: container IDs (users and groups
// alike) 0 to UsernsSize-1 are host IDs HostID to HostID+UsernsSize-1.
type Userns struct {
	HostID uint32
}

// CheckUsernsHostID checks the first host ID of a user namespace's range.
// It is the one home of the rule: the Caddy module checks its config with
// it too.
func CheckUsernsHostID(id int64) error {
	if id < MinUsernsHostID || id > MaxUsernsHostID {
		return fmt.Errorf("host ID %d out of range: must be from %d to %d, so the %d IDs from it are neither the host's own users nor past 2^32-2",
			id, MinUsernsHostID, int64(MaxUsernsHostID), UsernsSize)
	}
	return nil
}

// User is a numeric user and group.
type User struct {
	UID, GID uint32
}

// CheckCPUs checks a CPU quota that is set (zero means DefaultCPUs and
// needs no check). It is the one home of the rule: the Caddy module checks
// its config with it too.
func CheckCPUs(cpus float64) error {
	if !(cpus >= MinCPUs && cpus <= MaxCPUs) { // NaN fails too
		return fmt.Errorf("cpus %g out of range: must be a number from %g to %d", cpus, MinCPUs, MaxCPUs)
	}
	return nil
}

// CheckNofile checks an open-file limit that is set (zero means
// DefaultNofile and needs no check). It is the one home of the rule: the
// Caddy module checks its config with it too.
func CheckNofile[N int64 | uint64](nofile N) error {
	switch {
	case nofile < 1:
		return fmt.Errorf("nofile %d under the minimum: must be an integer from 1 to %d", nofile, MaxNofile)
	case nofile > MaxNofile:
		return fmt.Errorf("nofile %d over the maximum: must be an integer from 1 to %d", nofile, MaxNofile)
	}
	return nil
}

func (f *Function) validate() error {
	if f.Name == "" {
		return fmt.Errorf("function has no name")
	}
	if f.CPUs != 0 {
		if err := CheckCPUs(f.CPUs); err != nil {
			return fmt.Errorf("function %s: %w", f.Name, err)
		}
	}
	if f.Nofile != 0 {
		if err := CheckNofile(f.Nofile); err != nil {
			return fmt.Errorf("function %s: %w", f.Name, err)
		}
	}
	if f.Userns != nil {
		if err := CheckUsernsHostID(int64(f.Userns.HostID)); err != nil {
			return fmt.Errorf("function %s: %w", f.Name, err)
		}
		if f.HostNetwork {
			return fmt.Errorf("function %s: a user namespace can't be combined with the host's network", f.Name)
		}
	}
	if f.Image == nil || f.Image.Image == nil {
		return fmt.Errorf("function %s: %w", f.Name, ErrImageNotReady)
	}
	return nil
}

// snapshotOpts are the function's options for its writable snapshots: in
// a user namespace, the mapping, so the overlay snapshotter hands out
// id-mapped layers and an upper directory owned by the container's root.
func (f *Function) snapshotOpts() []ctrsnapshots.Opt {
	if f.Userns == nil {
		return nil
	}
	// The labels client.WithRemapperLabels sets (that one is Unix-only).
	m := fmt.Sprintf("0:%d:%d", f.Userns.HostID, UsernsSize)
	return []ctrsnapshots.Opt{ctrsnapshots.WithLabels(map[string]string{
		ctrsnapshots.LabelSnapshotUIDMapping: m,
		ctrsnapshots.LabelSnapshotGIDMapping: m,
	})}
}
