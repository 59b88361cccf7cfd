package cluster

import "syscall"

// SysProcAttr puts a child in its own process group (so a terminal's Ctrl-C
// reaches only the harness, which then stops its children in order) and has
// the kernel kill it when the process that started it dies, so that no node
// outlives a crashed or timed-out test binary.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
