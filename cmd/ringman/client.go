package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"ringman/httpapi"
	"ringman/router"
)

// defaultAPIAddr is where `ringman serve` puts its API by default.
const defaultAPIAddr = "127.0.0.1:7380"

// clientFlags are the flags every client command takes.
type clientFlags struct {
	addr  string
	token string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	addr := os.Getenv("RINGMAN_ADDR")
	if addr == "" {
		addr = defaultAPIAddr
	}
	cmd.Flags().StringVar(&f.addr, "addr", addr, "API address of the node to talk to (env RINGMAN_ADDR)")
	cmd.Flags().StringVar(&f.token, "api-token", os.Getenv("RINGMAN_API_TOKEN"), "bearer token for commands that change state (env RINGMAN_API_TOKEN)")
}

func (f *clientFlags) client() (*httpapi.Client, error) {
	c, err := httpapi.NewClient(f.addr, f.token)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

func checkFormat(format string) error {
	if format != "text" && format != "json" {
		return usagef("--format must be text or json, got %q", format)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(escapeJSON(raw), '\n'))
	return err
}

func newMembersCmd() *cobra.Command {
	var cf clientFlags
	var format, status string
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the cluster's members as the node sees them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			statusRe, err := regexp.Compile("^(?:" + status + ")$")
			if err != nil {
				return usagef("--status is not a valid regular expression: %v", err)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			members, err := c.Members(cmd.Context())
			if err != nil {
				return err
			}
			kept := members[:0]
			for _, m := range members {
				if statusRe.MatchString(m.Status) {
					kept = append(kept, m)
				}
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), kept)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			for _, m := range kept {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s", cell(m.Name), cell(m.Addr), cell(m.Status), formatServices(m.Services))
				switch {
				case m.Check != nil:
					fmt.Fprintf(tw, "\t%s", formatCheck(m.Check))
				case m.CheckFailing:
					fmt.Fprint(tw, "\tcheck failing")
				}
				fmt.Fprintln(tw)
			}
			return tw.Flush()
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().StringVar(&status, "status", ".*", "only members whose status matches this regular expression")
	return cmd
}

// formatCheck prints the answering node's health check: its state, the
// probes in a row behind it, and the last error while it fails (or when the
// last probe failed).
func formatCheck(c *httpapi.MemberCheck) string {
	s := fmt.Sprintf("check %s (%d passed in a row)", c.State, c.Passes)
	if c.Failures > 0 {
		s = fmt.Sprintf("check %s (%d failed in a row): %s", c.State, c.Failures, c.LastError)
	}
	return escapeText(s) // the last column: spaces are fine
}

// formatServices prints services like the --service flag takes them, each
// escaped (peers advertise them).
func formatServices(services map[string][]string) string {
	var parts []string
	for name, insts := range services {
		for _, inst := range insts {
			parts = append(parts, cell(name+"="+inst))
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func newLookupCmd() *cobra.Command {
	var cf clientFlags
	var format, service string
	var n int
	cmd := &cobra.Command{
		Use:   "lookup KEY",
		Short: "Show which backend serves KEY (exit code 1 when none does)",
		Long: `Show which backend serves KEY, as nginx would be told. With -n, also the
next candidates in preference order (-n is 1 to ` + strconv.Itoa(router.MaxCandidates) + `; anything else is a
usage error). Prints one backend per line, each with where the answer came
from (ring or override). A service the node has never heard of is an error
of its own ("unknown service"), apart from one with no live instance.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			// The node would refuse it too; refusing it here makes it a
			// usage error (exit 2), and sends nothing.
			if !router.ValidCandidates(n) {
				return usagef("-n must be %s, got %d", router.CandidatesRule, n)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			res, err := c.Lookup(cmd.Context(), args[0], service, n)
			if err != nil {
				return err
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), res)
			}
			for _, b := range res.Candidates {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", cell(b), cell(res.Source))
			}
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().StringVarP(&service, "service", "s", "", "service to look up in (default: the node's default service)")
	cmd.Flags().IntVarP(&n, "candidates", "n", 1, "how many candidates to show, owner first (1 to "+strconv.Itoa(router.MaxCandidates)+")")
	return cmd
}

func newJoinCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "join ADDR...",
		Short: "Make the node join a cluster through the nodes at ADDR (gossip host:port)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			n, err := c.Join(cmd.Context(), args)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "joined through %d node(s)\n", n)
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

func newLeaveCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Make the node leave the cluster gracefully and stop",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.Leave(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "node is leaving the cluster and will stop")
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

func newWeightCmd() *cobra.Command {
	var cf clientFlags
	var service string
	cmd := &cobra.Command{
		Use:   "weight INSTANCE WEIGHT",
		Short: "Change the weight of one of the node's instances (0 to 100; 0: listed, no keys) until it restarts",
		Long: `Change the weight of one of the instances the node advertises, as
--service's weight= gives it: its share of the keys follows (weight 2 owns
about twice what weight 1 does), and only the keys that share gains or
loses move. Every node applies it within a gossip round. Ask the node that
fronts the instance (ringman members shows which); a restart takes the
weight from --service again.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			weight, err := strconv.Atoi(args[1])
			if err != nil {
				return usagef("WEIGHT %s: want a whole number from 0 to 100", cell(args[1]))
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			res, err := c.SetWeight(cmd.Context(), service, args[0], weight)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s=%s\n", cell(res.Service), cell(res.Instance))
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVarP(&service, "service", "s", "", "service of the instance (default: the node's default service)")
	return cmd
}

func newDrainCmd() *cobra.Command {
	var cf clientFlags
	var undo bool
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Take the node's instances out of every ring, staying in the cluster (--undo to return)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			draining, err := c.Drain(cmd.Context(), !undo)
			if err != nil {
				return err
			}
			if draining {
				fmt.Fprintln(cmd.OutOrStdout(), "draining: this node's instances are out of every ring")
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), "serving: this node's instances are back in the rings")
			}
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&undo, "undo", false, "stop draining")
	return cmd
}
