package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/lpmos/lpmos/internal/pki"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Per-member etcd identities. The embedded members run etcd with client
// certificate checking and auth enabled: etcd takes the user name from the
// client certificate's CN. Every member certificate's CN is its own etcd
// user ("<name>@<random>" for joined members, so a reused name never
// revives an old certificate), granted the root role (members add and
// remove members and users). Removing a member deletes its users, so its
// certificate can no longer read or write anything.

const (
	rootUser = "root"
	rootRole = "root"
	// prefixMemberUsers maps a member id (hex) to its name, for removing
	// the users of a learner that never started (etcd lists no name).
	prefixMemberUsers = "/cluster/member-users/"
)

// memberUser is the CN (etcd user) for a new certificate of member name.
func memberUser(name string) (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("member user: %w", err)
	}
	return name + "@" + hex.EncodeToString(b), nil
}

// usersOf reports whether etcd user u belongs to member name.
func userOf(u, name string) bool {
	return u == name || strings.HasPrefix(u, name+"@")
}

// certCN is the CN of the certificate in file.
func certCN(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read member certificate: %w", err)
	}
	cert, err := pki.ParseCertPEM(data)
	if err != nil {
		return "", err
	}
	return cert.Subject.CommonName, nil
}

func ignoreExists(err error) error {
	if err == nil || errors.Is(err, rpctypes.ErrUserAlreadyExist) || errors.Is(err, rpctypes.ErrRoleAlreadyExist) ||
		strings.Contains(err.Error(), "already exists") {
		return nil
	}
	return err
}

// addMemberUser creates etcd user u (no password: certificate only) with
// the root role.
func addMemberUser(ctx context.Context, cli *clientv3.Client, u string) error {
	if _, err := cli.UserAddWithOptions(ctx, u, "", &clientv3.UserAddOptions{NoPassword: true}); ignoreExists(err) != nil {
		return fmt.Errorf("add etcd user %q: %w", u, err)
	}
	if _, err := cli.UserGrantRole(ctx, u, rootRole); err != nil {
		return fmt.Errorf("grant etcd user %q its role: %w", u, err)
	}
	return nil
}

// setupAuth enables etcd auth on a cluster that runs without it (a new
// cluster, or one from before per-member identities), through in, the
// in-process client (which works only while auth is off): a root user, and
// a user for every started member (the CN its certificate has: its name for
// certificates from before) and for this member's certificate.
func (s *Store) setupAuth(ctx context.Context, in *clientv3.Client) error {
	st, err := in.AuthStatus(ctx)
	if err != nil {
		if strings.Contains(err.Error(), "permission denied") || strings.Contains(err.Error(), "user name") {
			return nil // enabled: the in-process client has no identity
		}
		return fmt.Errorf("etcd auth status: %w", err)
	}
	if st.Enabled {
		return nil
	}
	if _, err := in.RoleAdd(ctx, rootRole); ignoreExists(err) != nil {
		return fmt.Errorf("add etcd role root: %w", err)
	}
	users := []string{rootUser}
	if cn, err := certCN(s.tls.CertFile); err == nil {
		users = append(users, cn)
	} else {
		return err
	}
	list, err := in.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("list members: %w", err)
	}
	for _, m := range list.Members {
		if m.Name != "" {
			users = append(users, m.Name)
		}
	}
	for _, u := range users {
		if err := addMemberUser(ctx, in, u); err != nil {
			return err
		}
	}
	if _, err := in.AuthEnable(ctx); err != nil {
		return fmt.Errorf("enable etcd auth: %w", err)
	}
	s.log.Info("store: etcd auth enabled: each member's certificate is its own etcd user", "users", users)
	return nil
}

// selfClient is this member's own client, in process (store/inproc.go),
// authenticated as the user of its certificate's CN like a TLS client of
// the member would be; other members and external clients use mutual TLS.
func (s *Store) selfClient() (*clientv3.Client, etcdserverpb.KVClient, etcdserverpb.LeaseClient, error) {
	cert, err := readCert(s.tls.CertFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("member certificate: %w", err)
	}
	cli, kvc, lc := newInprocClient(s.etcd.Server, cert, recoverRemovedMember(s.log.With("component", "etcd"), s.markRemoved))
	return cli, kvc, lc, nil
}

// deleteMemberUsersWith deletes, through cli, the etcd users of member
// name (or, for a learner that never started, of the name recorded at its
// admission). The user cli authenticates as goes last (a member removing
// itself).
func (s *Store) deleteMemberUsersWith(ctx context.Context, cli *clientv3.Client, id uint64, name string) error {
	idKey := prefixMemberUsers + fmt.Sprintf("%x", id)
	resp, err := cli.Get(ctx, idKey)
	if err != nil {
		return fmt.Errorf("read the users of member %x: %w", id, err)
	}
	if name == "" && len(resp.Kvs) == 1 {
		name = string(resp.Kvs[0].Value)
	}
	if _, err := cli.Delete(ctx, idKey); err != nil {
		return fmt.Errorf("forget the users of member %x: %w", id, err)
	}
	if name == "" || name == rootUser {
		return nil
	}
	list, err := cli.UserList(ctx)
	if err != nil {
		return fmt.Errorf("list etcd users: %w", err)
	}
	self, _ := certCN(s.tls.CertFile)
	var users []string
	for _, u := range list.Users {
		if userOf(u, name) && u != self {
			users = append(users, u)
		}
	}
	if userOf(self, name) && slices.Contains(list.Users, self) {
		users = append(users, self)
	}
	for _, u := range users {
		if n, err := revokeCertsOf(ctx, cli, u); err != nil { // store/membercerts.go: the CRL refuses them
			return err
		} else if n > 0 {
			s.log.Info("store: revoked the certificates of a removed member", "user", u, "certificates", n)
		}
		if _, err := cli.UserDelete(ctx, u); err != nil && !errors.Is(err, rpctypes.ErrUserNotFound) {
			return fmt.Errorf("delete etcd user %q: %w", u, err)
		}
		s.log.Info("store: deleted the etcd user of a removed member", "user", u)
	}
	return nil
}
