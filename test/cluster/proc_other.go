//go:build !linux

package cluster

import "syscall"

// SysProcAttr puts a child in its own process group; see proc_linux.go.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
