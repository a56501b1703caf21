package spawner

import "time"

// Usage is what a container's processes used from the request's start
// (Begin) on, from its own cgroup: CPU time (user and system) and the peak
// of its memory (on cgroup v2 since the container started; its init's
// share before the request is small).
type Usage struct {
	CPU        time.Duration
	MemoryPeak int64
}

// Usage reads what the container used since Begin. Call it before
// Destroy, which removes the cgroup; false when the cgroup could not be
// read (off Linux, or gone).
func (i *Instance) Usage() (Usage, bool) {
	cpu, peak, ok := readUsage(i.cgroup)
	if !ok {
		return Usage{}, false
	}
	return Usage{CPU: max(cpu-i.cpuAtBegin, 0), MemoryPeak: peak}, true
}

// markUsageStart takes the CPU already used (by the init while it waited)
// off what Usage reports, and restarts the peak where the kernel allows.
func (i *Instance) markUsageStart() {
	if cpu, _, ok := readUsage(i.cgroup); ok {
		i.cpuAtBegin = cpu
	}
	resetMemoryPeak(i.cgroup)
}
