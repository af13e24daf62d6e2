package app

import (
	"context"
	"log/slog"

	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/store"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
)

// regionalOptions are the flags of the regional role.
type regionalOptions struct{}

func (o *regionalOptions) addFlags(cmd *cobra.Command) {}

func startRegional(ctx context.Context, g *errgroup.Group, st *store.Store, reg *health.Registry, o serveOptions, log *slog.Logger) error {
	return nil
}
