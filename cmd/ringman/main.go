// Command ringman is the daemon (ringman serve) and its command-line client.
// Client commands reach a running node through its HTTP API (--addr) and
// never open its files.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set at build time by the Makefile (-ldflags -X); otherwise (go build,
// go install) filled in from the build information the go command embeds.
var (
	version = "dev"
	commit  = "unknown"
)

func init() {
	info, _ := debug.ReadBuildInfo()
	version, commit = fromBuildInfo(version, commit, info)
}

// fromBuildInfo fills the version and commit that the ldflags did not set
// from info: the module version of `go install ringman@v1.2.3`, and the
// VCS revision (with -dirty for local changes) that `go build` records in
// a checkout.
func fromBuildInfo(version, commit string, info *debug.BuildInfo) (string, string) {
	if info == nil {
		return version, commit
	}
	if v := info.Main.Version; version == "dev" && v != "" && v != "(devel)" {
		version = v
	}
	if commit != "unknown" {
		return version, commit
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return version, commit
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return version, rev
}

// Exit codes (README: CLI).
const (
	exitOK      = 0
	exitFailure = 1 // no answer, or the command failed
	exitUsage   = 2
)

// usageError marks a mistake in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdout, stderr)
}

// runContext is run with a context that stops `serve` when it ends.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	// Errors can carry what a node answered: one line, escaped.
	fmt.Fprintf(stderr, "ringman: %s\n", escapeText(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "ringman",
		Short: "Consistent-hash routing for nginx, shared by a gossip cluster",
		Long: `ringman tells nginx which live instance of a service should serve each
request, so that the same URL reaches the same instance from every load
balancer of a pool while instances come and go.

Start a node with 'ringman serve'; the other commands talk to a running node.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(
		newServeCmd(),
		newMembersCmd(),
		newLookupCmd(),
		newJoinCmd(),
		newLeaveCmd(),
		newDrainCmd(),
		newWeightCmd(),
		newHostsCmd(),
		newKeysCmd(),
		newKeygenCmd(),
		newVersionCmd(),
	)
	// Unknown subcommands and wrong argument counts are usage errors, at
	// every level (ringman hosts set ...).
	var markUsage func(cmds []*cobra.Command)
	markUsage = func(cmds []*cobra.Command) {
		for _, c := range cmds {
			if c.Args != nil {
				validate := c.Args
				c.Args = func(cmd *cobra.Command, args []string) error {
					if err := validate(cmd, args); err != nil {
						return usageError{fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())}
					}
					return nil
				}
			}
			markUsage(c.Commands())
		}
	}
	markUsage(root.Commands())
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("unknown command %q (see 'ringman --help')", args[0])
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, args []string) error {
		return cmd.Help()
	}
	return root
}
