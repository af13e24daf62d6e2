package app

import (
	"fmt"
	"net/url"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
	"github.com/spf13/cobra"
)

// newOperatorTokenCmd is `lpmos token operator create|list|rm`: named
// operator tokens, admin or read-only.
func newOperatorTokenCmd(o *clientOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Named operator tokens: each name shows in task events as the actor; read-only ones only read",
	}
	var readOnly bool
	create := &cobra.Command{
		Use:   "create NAME [--read-only]",
		Short: "Print a new named operator token (shown once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			req := ui.CreateOperatorTokenRequest{Name: args[0], Kind: store.OperatorAdmin}
			if readOnly {
				req.Kind = store.OperatorReadOnly
			}
			var op store.OperatorToken
			if err := c.do(cmd.Context(), "POST", "/api/v1/auth/operators", req, &op); err != nil {
				return fmt.Errorf("create operator token: %w", err)
			}
			if structured(o.output) {
				return printData(cmd.OutOrStdout(), o.output, op)
			}
			fmt.Fprintln(cmd.OutOrStdout(), op.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "%s operator token %q: use it as --token or LPMOS_TOKEN; it is not shown again (`lpmos token operator rm %s` revokes it)\n", op.Kind, op.Name, op.Name)
			return nil
		},
	}
	create.Flags().BoolVar(&readOnly, "read-only", false, "the token may only read (GET): for dashboards and monitoring")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the named operator tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var ops []store.OperatorToken
			if err := c.do(cmd.Context(), "GET", "/api/v1/auth/operators", nil, &ops); err != nil {
				return fmt.Errorf("list operator tokens: %w", err)
			}
			return printOperatorTokens(cmd.OutOrStdout(), o.output, ops) // app/output_lists.go
		},
	}
	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Revoke a named operator token at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/auth/operators/"+url.PathEscape(args[0]), nil, &map[string]string{}); err != nil {
				return fmt.Errorf("remove operator token: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "operator token %s removed\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, rm)
	return cmd
}
