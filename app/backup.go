package app

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
	"github.com/spf13/cobra"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// A backup is a gzip'd tar of one member's state:
//
//	manifest.json  backupManifest
//	member.json    the member's settings (name, etcd URLs, region)
//	admin.token    the admin token, when this data dir has it
//	pki/*          the cluster CA, the cluster key that seals the CA key in
//	               etcd, the member's certificate and key
//	etcd.db        an etcd snapshot taken from the running member
//
// It holds the cluster's private keys: it is written 0600, keep it so.
const (
	backupFormat       = 1
	backupManifestName = "manifest.json"
	backupSnapshotName = "etcd.db"
	// restoreRevisionBump raises the restored revision so a watcher that
	// saw the old cluster never mistakes old revisions for new ones (etcd's
	// advice for restores); the bumped-over range is marked compacted.
	restoreRevisionBump = 1_000_000
	// maxBackupSmallFile bounds every entry but the snapshot.
	maxBackupSmallFile = 1 << 20
	// maxBackupSnapshot bounds the snapshot: the largest etcd quota lpmos
	// allows (8 GiB) plus room for its hash.
	maxBackupSnapshot = 8<<30 + 1<<20
)

type backupManifest struct {
	Format       int       `json:"format"`
	Created      time.Time `json:"created"`
	LpmosVersion string    `json:"lpmos_version"`
	Member       string    `json:"member"`
	Revision     int64     `json:"etcd_revision"`
	Keys         int       `json:"etcd_keys"`
	SnapshotSize int64     `json:"snapshot_bytes"`
	SHA256       string    `json:"snapshot_sha256"`
}

func newBackupCmd(version string) *cobra.Command {
	var dataDir, endpoint string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Save a running member's etcd snapshot and PKI to FILE (restore it with lpmos restore)",
		Long: `Take an etcd snapshot from the running lpmos member whose data dir is --data-dir
(over its etcd client URL, with the member's own certificate) and write it to
FILE with the member's PKI (cluster CA, cluster key, member certificate),
its admin token and settings. FILE holds the cluster's private keys: it is
written with mode 0600. Restore with: lpmos restore FILE --data-dir NEW`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			m, err := runBackup(ctx, dataDir, endpoint, args[0], version)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backup %s: member %s, etcd revision %d, %d keys, snapshot %d bytes (sha256 %s)\n",
				args[0], m.Member, m.Revision, m.Keys, m.SnapshotSize, m.SHA256)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "./lpmos-data", "data dir of the running member to back up")
	f.StringVar(&endpoint, "etcd-endpoint", "", "etcd client URL of that member (default: the one in <data-dir>/member.json)")
	f.DurationVar(&timeout, "timeout", 30*time.Minute, "give up after this long")
	return cmd
}

func newRestoreCmd() *cobra.Command {
	var dataDir, name, clientURL, peerURL string
	cmd := &cobra.Command{
		Use:   "restore FILE --data-dir NEW",
		Short: "Create a new data dir from a backup; lpmos serve --data-dir NEW then serves its tasks",
		Long: `Restore FILE (from lpmos backup) into the new data dir --data-dir: the PKI,
admin token and settings are copied and the etcd snapshot becomes a new
one-member cluster (etcd's snapshot restore). The data dir must not exist or
be empty; nothing is left behind if the restore fails. Start it with
lpmos serve --data-dir NEW; more members join it with lpmos join.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return errors.New("restore needs --data-dir NEW: the new data dir to create")
			}
			m, err := runRestore(args[0], dataDir, name, clientURL, peerURL)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s: member %s, etcd revision %d (+%d), %d keys; start it with: lpmos serve --data-dir %s\n",
				args[0], dataDir, m.Name, m.revision, restoreRevisionBump, m.keys, dataDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "new data dir to create (must not exist, or be empty)")
	f.StringVar(&name, "name", "", "etcd member name (default: the backed-up member's)")
	f.StringVar(&clientURL, "etcd-client-url", "", "etcd client URL of the restored member (default: the backed-up member's)")
	f.StringVar(&peerURL, "etcd-peer-url", "", "etcd peer URL of the restored member (default: the backed-up member's)")
	return cmd
}

// runBackup snapshots the member of dataDir and writes the backup to out
// (a temp file renamed into place: never half a backup).
func runBackup(ctx context.Context, dataDir, endpoint, out, version string) (backupManifest, error) {
	var man backupManifest
	mf, err := readMemberFile(dataDir)
	if err != nil {
		return man, fmt.Errorf("%w: is %s the data dir of an lpmos member? (--data-dir)", err, dataDir)
	}
	if endpoint == "" {
		endpoint = mf.ClientURL
	}
	pdir := pki.Dir(filepath.Join(dataDir, "pki"))
	tc, err := transport.TLSInfo{
		CertFile: pdir.Path(pki.MemberCertFile), KeyFile: pdir.Path(pki.MemberKeyFile), TrustedCAFile: pdir.Path(pki.CACertFile),
	}.ClientConfig()
	if err != nil {
		return man, fmt.Errorf("member certificate in %s: %w", pdir, err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Context: ctx})
	if err != nil {
		return man, fmt.Errorf("etcd client for %s: %w", endpoint, err)
	}
	defer cli.Close()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = cli.Status(sctx, endpoint)
	cancel()
	if err != nil {
		return man, fmt.Errorf("reach the etcd member at %s (is lpmos serve running with --data-dir %s?): %w", endpoint, dataDir, err)
	}

	dir := filepath.Dir(out)
	snap, err := os.CreateTemp(dir, ".lpmos-snapshot-*")
	if err != nil {
		return man, fmt.Errorf("temp file next to %s: %w", out, err)
	}
	defer os.Remove(snap.Name())
	defer snap.Close()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return man, fmt.Errorf("etcd snapshot from %s (is lpmos serve running with --data-dir %s?): %w", endpoint, dataDir, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(snap, h), rc)
	rc.Close()
	if err != nil {
		return man, fmt.Errorf("etcd snapshot from %s (is lpmos serve running with --data-dir %s?): %w", endpoint, dataDir, err)
	}
	if err := snap.Sync(); err != nil {
		return man, fmt.Errorf("write snapshot: %w", err)
	}
	st, err := snapshot.NewV3(zap.NewNop()).Status(snap.Name())
	if err != nil {
		return man, fmt.Errorf("the snapshot etcd sent does not verify: %w", err)
	}
	man = backupManifest{
		Format: backupFormat, Created: time.Now().UTC(), LpmosVersion: version, Member: mf.Name,
		Revision: st.Revision, Keys: st.TotalKey, SnapshotSize: n, SHA256: hex.EncodeToString(h.Sum(nil)),
	}

	tmp, err := os.CreateTemp(dir, ".lpmos-backup-*")
	if err != nil {
		return man, fmt.Errorf("temp file next to %s: %w", out, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Chmod(0o600); err != nil {
		return man, fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	gz := gzip.NewWriter(tmp)
	tw := tar.NewWriter(gz)
	mj, _ := json.MarshalIndent(man, "", "  ")
	if err := tarBytes(tw, backupManifestName, append(mj, '\n')); err != nil {
		return man, err
	}
	files := []string{memberFileName, "admin.token"}
	ents, err := os.ReadDir(string(pdir))
	if err != nil {
		return man, fmt.Errorf("read %s: %w", pdir, err)
	}
	for _, e := range ents {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			files = append(files, "pki/"+e.Name())
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dataDir, filepath.FromSlash(f)))
		if errors.Is(err, os.ErrNotExist) && f == "admin.token" {
			continue // a joined member: the token lives with the member that created it
		}
		if err != nil {
			return man, fmt.Errorf("read %s: %w", f, err)
		}
		if err := tarBytes(tw, f, data); err != nil {
			return man, err
		}
	}
	if _, err := snap.Seek(0, io.SeekStart); err != nil {
		return man, fmt.Errorf("read snapshot: %w", err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: backupSnapshotName, Mode: 0o600, Size: n, ModTime: man.Created, Typeflag: tar.TypeReg}); err != nil {
		return man, fmt.Errorf("write backup: %w", err)
	}
	if _, err := io.Copy(tw, snap); err != nil {
		return man, fmt.Errorf("write backup: %w", err)
	}
	if err := tw.Close(); err != nil {
		return man, fmt.Errorf("write backup: %w", err)
	}
	if err := gz.Close(); err != nil {
		return man, fmt.Errorf("write backup: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return man, fmt.Errorf("write backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return man, fmt.Errorf("write backup: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return man, fmt.Errorf("write backup: %w", err)
	}
	return man, nil
}

func tarBytes(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: time.Now(), Typeflag: tar.TypeReg}); err != nil {
		return fmt.Errorf("write backup: %w", err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("write backup: %w", err)
	}
	return nil
}

type restored struct {
	memberFile
	revision int64
	keys     int
}

// runRestore unpacks the backup file into a temp dir beside dataDir,
// restores its etcd snapshot there and renames it to dataDir.
func runRestore(file, dataDir, name, clientURL, peerURL string) (restored, error) {
	var res restored
	if ents, err := os.ReadDir(dataDir); err == nil && len(ents) > 0 {
		return res, fmt.Errorf("--data-dir %s is not empty: restore creates a new data dir (choose another path, or stop lpmos and move this one away)", dataDir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("--data-dir %s: %w", dataDir, err)
	}
	in, err := os.Open(file)
	if err != nil {
		return res, fmt.Errorf("open backup: %w", err)
	}
	defer in.Close()
	parent := filepath.Dir(filepath.Clean(dataDir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return res, fmt.Errorf("create %s: %w", parent, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dataDir)+".restore-")
	if err != nil {
		return res, fmt.Errorf("temp dir beside %s: %w", dataDir, err)
	}
	defer os.RemoveAll(tmp) // gone after the rename; the half-done restore otherwise
	if err := os.Chmod(tmp, 0o700); err != nil {
		return res, fmt.Errorf("chmod %s: %w", tmp, err)
	}
	snapPath := filepath.Join(tmp, ".etcd.db")
	man, sum, err := unpackBackup(in, tmp, snapPath)
	if err != nil {
		return res, fmt.Errorf("backup %s: %w", file, err)
	}
	if man.SHA256 != sum {
		return res, fmt.Errorf("backup %s: snapshot sha256 %s, manifest says %s: the file is damaged", file, sum, man.SHA256)
	}
	mf, err := readMemberFile(tmp)
	if err != nil {
		return res, fmt.Errorf("backup %s: %w", file, err)
	}
	for _, o := range []struct {
		dst *string
		v   string
	}{{&mf.Name, name}, {&mf.ClientURL, clientURL}, {&mf.PeerURL, peerURL}} {
		if o.v != "" {
			*o.dst = o.v
		}
	}
	if mf.Name == "" {
		return res, fmt.Errorf("backup %s has no member name: pass --name", file)
	}
	if _, err := parseMemberURLFlag("--etcd-peer-url", mf.PeerURL); err != nil {
		return res, err
	}
	if _, err := parseMemberURLFlag("--etcd-client-url", mf.ClientURL); err != nil {
		return res, err
	}
	if err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snapPath,
		Name:                mf.Name,
		OutputDataDir:       filepath.Join(tmp, "etcd"),
		PeerURLs:            []string{mf.PeerURL},
		InitialCluster:      mf.Name + "=" + mf.PeerURL,
		InitialClusterToken: "lpmos", // store/etcd.go
		RevisionBump:        restoreRevisionBump,
		MarkCompacted:       true,
	}); err != nil {
		return res, fmt.Errorf("etcd snapshot restore: %w", err)
	}
	if err := os.Remove(snapPath); err != nil {
		return res, fmt.Errorf("remove %s: %w", snapPath, err)
	}
	data, _ := json.MarshalIndent(mf, "", "  ")
	if err := writeFileAtomic(filepath.Join(tmp, memberFileName), append(data, '\n'), 0o600); err != nil {
		return res, err
	}
	_ = os.Remove(dataDir) // an empty dir (checked above) gives way to the restored one
	if err := os.Rename(tmp, dataDir); err != nil {
		return res, fmt.Errorf("move the restored data dir into place: %w", err)
	}
	return restored{memberFile: mf, revision: man.Revision, keys: man.Keys}, nil
}

// parseMemberURLFlag checks an etcd member URL the way serve does.
func parseMemberURLFlag(flag, v string) (string, error) {
	if !strings.HasPrefix(v, "https://") && !strings.HasPrefix(v, "http://") {
		return "", fmt.Errorf("%s %q: want an http(s) URL such as https://10.0.0.1:2380", flag, v)
	}
	return v, nil
}

// unpackBackup extracts the backup into dir (the snapshot to snapPath)
// and returns its manifest and the snapshot's sha256. Only the entries a
// backup has are accepted, each bounded in size.
func unpackBackup(r io.Reader, dir, snapPath string) (backupManifest, string, error) {
	var man backupManifest
	gz, err := gzip.NewReader(r)
	if err != nil {
		return man, "", fmt.Errorf("not an lpmos backup (gzip): %w", err)
	}
	tr := tar.NewReader(gz)
	var sum string
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return man, "", fmt.Errorf("not an lpmos backup (tar): %w", err)
		}
		name := h.Name
		if h.Typeflag != tar.TypeReg || seen[name] || !backupEntryOK(name) {
			return man, "", fmt.Errorf("unexpected entry %q in the backup", name)
		}
		seen[name] = true
		limit := int64(maxBackupSmallFile)
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if name == backupSnapshotName {
			limit, dst = maxBackupSnapshot, snapPath
		}
		if h.Size > limit {
			return man, "", fmt.Errorf("entry %q is %d bytes, at most %d", name, h.Size, limit)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return man, "", fmt.Errorf("create %s: %w", filepath.Dir(dst), err)
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return man, "", fmt.Errorf("write %s: %w", dst, err)
		}
		hs := sha256.New()
		_, err = io.Copy(io.MultiWriter(f, hs), io.LimitReader(tr, limit))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return man, "", fmt.Errorf("read %q from the backup (truncated?): %w", name, err)
		}
		if name == backupSnapshotName {
			sum = hex.EncodeToString(hs.Sum(nil))
		}
	}
	for _, need := range []string{backupManifestName, memberFileName, backupSnapshotName, "pki/" + pki.CACertFile} {
		if !seen[need] {
			return man, "", fmt.Errorf("not an lpmos backup: %s is missing", need)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, backupManifestName))
	if err != nil {
		return man, "", fmt.Errorf("read manifest: %w", err)
	}
	if err := json.Unmarshal(data, &man); err != nil {
		return man, "", fmt.Errorf("manifest: %w", err)
	}
	if man.Format != backupFormat {
		return man, "", fmt.Errorf("backup format %d, this lpmos reads format %d: restore it with the lpmos version that wrote it (%s)", man.Format, backupFormat, man.LpmosVersion)
	}
	if err := os.Remove(filepath.Join(dir, backupManifestName)); err != nil {
		return man, "", fmt.Errorf("remove manifest: %w", err)
	}
	return man, sum, nil
}

func backupEntryOK(name string) bool {
	switch name {
	case backupManifestName, memberFileName, "admin.token", backupSnapshotName:
		return true
	}
	dir, base := path.Split(name)
	return dir == "pki/" && base != "" && base != "." && base != ".." && !strings.ContainsAny(base, `/\`) && !strings.HasPrefix(base, ".")
}
