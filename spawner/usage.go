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
	i.usageMu.Lock()
	defer i.usageMu.Unlock()
	u := i.usageFilesLocked()
	if u == nil {
		return Usage{}, false
	}
	cpu, peak, ok := u.read()
	if !ok {
		return Usage{}, false
	}
	return Usage{CPU: max(cpu-i.cpuAtBegin, 0), MemoryPeak: peak}, true
}

// markUsageStart takes the CPU already used (by the init while it waited)
// off what Usage reports, and restarts the peak where the kernel allows.
// Pause calls it once the cgroup is frozen, Begin in case Pause did not;
// only the first call counts.
func (i *Instance) markUsageStart() {
	i.usageMu.Lock()
	defer i.usageMu.Unlock()
	if i.usageMark {
		return
	}
	i.usageMark = true
	u := i.usageFilesLocked()
	if u == nil {
		return
	}
	if cpu, _, ok := u.read(); ok {
		i.cpuAtBegin = cpu
	}
	u.resetPeak()
}

// usageFilesLocked opens the cgroup's usage files on first use; nil if
// they can't be opened, or were closed. The descriptors are used under
// usageMu only, so closeUsage can't close one in use (and let its number
// be reused by another file).
func (i *Instance) usageFilesLocked() *usageFiles {
	if i.usage == nil && !i.usageClosed {
		if u, err := openUsage(i.cgroup); err == nil {
			i.usage = u
		}
	}
	return i.usage
}

// closeUsage closes the usage files, for Destroy.
func (i *Instance) closeUsage() {
	i.usageMu.Lock()
	defer i.usageMu.Unlock()
	if i.usage != nil {
		i.usage.close()
		i.usage = nil
	}
	i.usageClosed = true
}
