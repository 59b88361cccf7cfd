package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"ringman/httpapi"
)

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "List, install, use and remove gossip encryption keys on every node",
		Long: `Rotate the gossip encryption key of a running cluster without downtime,
like serf keys. The node at --addr makes the change on every member and
reports each node that did not make it (exit code 1); every node saves its
keyring in its data file, so restarts keep it.

  ringman keys install NEW   # every node decrypts with NEW too
  ringman keys use NEW       # every node encrypts with NEW (refused unless every node has it)
  ringman keys remove OLD    # OLD is gone everywhere (refused while a node encrypts with it)
  ringman keys list          # each key, on how many nodes it is installed and primary

Keys are base64, as 'ringman keygen' prints them. The keys routes need the
--api-token when the node has one (listing shows the keys).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(
		newKeysListCmd(),
		newKeyOpCmd("install", "Install KEY on every node: it decrypts gossip, and can then be used", "key installed on"),
		newKeyOpCmd("use", "Make KEY, installed on every node, the key that encrypts gossip on every node", "primary key changed on"),
		newKeyOpCmd("remove", "Remove KEY from every node (not while a node encrypts with it)", "key removed from"),
	)
	return cmd
}

func newKeysListCmd() *cobra.Command {
	var cf clientFlags
	var format string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the gossip keys: on how many nodes each is installed, and primary",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			res, err := c.Keys(cmd.Context())
			if res.Nodes == 0 {
				return err
			}
			if format == "json" {
				printJSON(cmd.OutOrStdout(), res)
				return err
			}
			w := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tINSTALLED\tPRIMARY")
			for _, k := range res.Keys {
				fmt.Fprintf(tw, "%s\t%d/%d\t%d/%d\n", cell(k.Key), k.Installed, res.Answered, k.Primary, res.Answered)
			}
			tw.Flush()
			fmt.Fprintf(w, "%d of %d nodes answered\n", res.Answered, res.Nodes)
			printKeyFailures(w, res)
			return err
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

func newKeyOpCmd(op, short, done string) *cobra.Command {
	var cf clientFlags
	var format string
	cmd := &cobra.Command{
		Use:   op + " KEY",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			if _, err := parseGossipKey(args[0]); err != nil {
				return usagef("KEY: %v", err)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			res, err := c.KeyOp(cmd.Context(), op, args[0])
			var se *httpapi.StatusError
			if errors.As(err, &se) && se.Status == http.StatusBadRequest {
				return usageError{err}
			}
			if res.Nodes == 0 {
				return err
			}
			if format == "json" {
				printJSON(cmd.OutOrStdout(), res)
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s %d of %d nodes\n", done, res.Answered, res.Nodes)
			printKeyFailures(w, res)
			return err
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

// printKeyFailures prints one line per node that did not answer or failed.
func printKeyFailures(w io.Writer, res httpapi.KeyringResult) {
	for _, f := range res.Failed {
		fmt.Fprintf(w, "failed: %s (%s): %s\n", cell(f.Node), cell(f.Addr), escapeText(f.Error))
	}
}

// parseGossipKey decodes a key as `ringman keygen` prints it.
func parseGossipKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %v (make one with 'ringman keygen')", err)
	}
	if l := len(key); l != 16 && l != 24 && l != 32 {
		return nil, fmt.Errorf("key is %d bytes, want 16, 24 or 32 (make one with 'ringman keygen')", l)
	}
	return key, nil
}
