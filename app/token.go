package app

import (
	"fmt"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
	"github.com/spf13/cobra"
)

func newTokenCmd() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create join tokens for new cluster members",
	}
	o.addFlags(cmd)
	var req ui.CreateJoinTokenRequest
	create := &cobra.Command{
		Use:   "create [--ttl 1h] [--single-use]",
		Short: "Print a join token for `lpmos join`",
		Long: `Print a join token: LPM10<sha256 of the cluster CA>::<id>.<secret>.
The cluster keeps only a hash of the secret; the token expires after --ttl.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var tok store.JoinToken
			if err := c.do(cmd.Context(), "POST", "/api/v1/cluster/tokens", req, &tok); err != nil {
				return fmt.Errorf("create join token: %w", err)
			}
			if o.output == "json" {
				return printJSON(cmd.OutOrStdout(), tok)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.Token)
			use := "any number of joins"
			if tok.SingleUse {
				use = "one join"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "valid until %s for %s: lpmos join %s --token <token> --region-id <region> --name <name> --peer-url https://<this box>:2380 --client-url https://<this box>:2379\n",
				tok.ExpiresAt.Local().Format("2006-01-02 15:04:05"), use, o.server)
			return nil
		},
	}
	create.Flags().StringVar(&req.TTL, "ttl", "1h", "how long the token is valid")
	create.Flags().BoolVar(&req.SingleUse, "single-use", false, "the token admits one member only")
	cmd.AddCommand(create)
	return cmd
}
