package app

import (
	"fmt"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
	"github.com/spf13/cobra"
)

// minMemberCertTTL bounds --member-cert-ttl from below: a member renews
// at 2/3 of the lifetime and retries a failed renewal every minute.
const minMemberCertTTL = time.Hour

// addMemberCertFlags adds --member-cert-ttl (LPMOS_MEMBER_CERT_TTL).
func addMemberCertFlags(cmd *cobra.Command, o *serveOptions) {
	cmd.Flags().DurationVar(&o.memberCertTTL, "member-cert-ttl", pki.DefaultMemberLifetime,
		"lifetime of the etcd member certificates this member issues and renews (renewed at 2/3 of it while running; at least 1h)")
}

func (o *serveOptions) checkMemberCertTTL() error {
	if o.memberCertTTL < minMemberCertTTL {
		return fmt.Errorf("--member-cert-ttl %s: at least %s (a member renews its certificate at 2/3 of it)", o.memberCertTTL, minMemberCertTTL)
	}
	return nil
}
