package main

import (
	"errors"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"ringman/httpapi"
)

func newHostsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hosts",
		Short: "List, set and remove host overrides (host -> backend, cluster-wide)",
		Long: `An override sends every key of a host to one backend, whatever the ring
says: exact host first, then the nearest "*." wildcard. A change made on one
node reaches every node of the cluster.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newHostsListCmd(), newHostsSetCmd(), newHostsRmCmd())
	return cmd
}

func newHostsListCmd() *cobra.Command {
	var cf clientFlags
	var format string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the overrides: host, backend, when and on which node they were set",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			hosts, err := c.Hosts(cmd.Context())
			if err != nil {
				return err
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), hosts)
			}
			if len(hosts) == 0 {
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tBACKEND\tUPDATED\tNODE")
			for _, h := range hosts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cell(h.Host), cell(h.Backend), h.UpdatedAt.UTC().Format(time.RFC3339), cell(h.Node))
			}
			return tw.Flush()
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

func newHostsSetCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "set HOST BACKEND",
		Short: "Send every key of HOST (a DNS name, or *.domain) to BACKEND (host:port)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			o, err := c.SetHost(cmd.Context(), args[0], args[1])
			var se *httpapi.StatusError
			if errors.As(err, &se) && se.Status == http.StatusBadRequest {
				// An invalid host or backend is a mistake on the command line.
				return usageError{err}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s\n", cell(o.Host), cell(o.Backend))
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

func newHostsRmCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "rm HOST",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove the override of HOST (exit code 1 when it has none)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			o, err := c.DeleteHost(cmd.Context(), args[0])
			var se *httpapi.StatusError
			if errors.As(err, &se) && se.Status == http.StatusBadRequest {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s (was %s)\n", cell(o.Host), cell(o.Backend))
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}
