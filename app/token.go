package app

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
	"github.com/spf13/cobra"
)

func newTokenCmd() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke join tokens for new cluster members",
	}
	o.addFlags(cmd)
	var req ui.CreateJoinTokenRequest
	var singleUse bool
	create := &cobra.Command{
		Use:   "create [--ttl 1h] [--reusable]",
		Short: "Print a join token for `lpmos join`",
		Long: `Print a join token: LPM10<sha256 of the cluster CA>::<id>.<secret>.
The cluster keeps only a hash of the secret; the token expires after --ttl.
A token admits one member unless --reusable is given; 'lpmos token list'
shows the tokens and 'lpmos token rm ID' revokes one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if singleUse && req.Reusable {
				return fmt.Errorf("--single-use and --reusable contradict each other: tokens are single-use by default, give --reusable alone for several joins")
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			var tok store.JoinToken
			if err := c.do(cmd.Context(), "POST", "/api/v1/cluster/tokens", req, &tok); err != nil {
				return fmt.Errorf("create join token: %w", err)
			}
			if structured(o.output) {
				return printData(cmd.OutOrStdout(), o.output, tok)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.Token)
			use := "any number of joins"
			if tok.SingleUse {
				use = "one join"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "token %s valid until %s for %s: lpmos join %s --token <token> --region-id <region> --name <name> --peer-url https://<this box>:2380 --client-url https://<this box>:2379\n",
				tok.ID, tok.ExpiresAt.Local().Format("2006-01-02 15:04:05"), use, o.server)
			return nil
		},
	}
	create.Flags().StringVar(&req.TTL, "ttl", "1h", "how long the token is valid")
	create.Flags().BoolVar(&req.Reusable, "reusable", false, "the token admits any number of members until it expires (default: one)")
	create.Flags().BoolVar(&singleUse, "single-use", false, "the token admits one member only (the default)")
	_ = create.Flags().MarkHidden("single-use")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the join tokens: id, single-use or reusable, expiry, used, revoked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var toks []store.JoinTokenInfo
			if err := c.do(cmd.Context(), "GET", "/api/v1/cluster/tokens", nil, &toks); err != nil {
				return fmt.Errorf("list join tokens: %w", err)
			}
			return printJoinTokens(cmd.OutOrStdout(), o.output, toks) // app/output_lists.go
		},
	}
	rm := &cobra.Command{
		Use:     "rm ID",
		Aliases: []string{"revoke"},
		Short:   "Revoke a join token at once (a join with it is refused as revoked)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var t store.JoinTokenInfo
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/cluster/tokens/"+url.PathEscape(args[0]), nil, &t); err != nil {
				return fmt.Errorf("revoke join token: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "join token %s revoked\n", t.ID)
			return nil
		},
	}
	rotate := &cobra.Command{
		Use:   "rotate-admin",
		Short: "Replace the admin token: the old one is refused at once",
		Long: `Replace the cluster's admin token. The old token is refused from now on and
this member's dashboard sessions end. The new token is printed once and
written to <data-dir>/admin.token (0600) when that directory exists.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var resp ui.RotateAdminResponse
			if err := c.do(cmd.Context(), "POST", "/api/v1/auth/rotate-admin", struct{}{}, &resp); err != nil {
				return fmt.Errorf("rotate the admin token: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.Token)
			path := filepath.Join(o.dataDir, "admin.token")
			if st, err := os.Stat(o.dataDir); err != nil || !st.IsDir() {
				fmt.Fprintf(cmd.ErrOrStderr(), "admin token rotated: the old one is refused now; keep the token above (%s does not exist, so it was not written)\n", o.dataDir)
				return nil
			}
			if err := writeFileAtomic(path, []byte(resp.Token+"\n"), 0o600); err != nil {
				return fmt.Errorf("admin token rotated (the old one is refused now) but not saved: keep the token printed above: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "admin token rotated: the old one is refused now; the new one is in %s\n", path)
			return nil
		},
	}
	cmd.AddCommand(create, list, rm, rotate, newOperatorTokenCmd(o)) // app/token_operator.go
	return cmd
}
