package store

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Agent credentials. Every agent token is "<kind>_<subject>_<secret>": the
// kind and subject say which record to check (so an image request, which
// names no task, still finds its session), the 256-bit secret is what
// opens it. Only SHA-256 hashes are stored.
//
//	b_<task id>_…   boot token: in the iPXE script (lpmos_token), single
//	                use, short-lived; exchanged for a session
//	s_<task id>_…   task session: every agent call about the task
//	d_<mac hex>_…   discovery session of a machine without a task
const (
	TokenBoot      = "b"
	TokenSession   = "s"
	TokenDiscovery = "d"
)

// DefaultBootTokenTTL is how long a boot token in an iPXE script stays
// redeemable.
const DefaultBootTokenTTL = 15 * time.Minute

// ErrAuth marks a refused agent credential (HTTP 401); the message says why.
var ErrAuth = errors.New("agent credential refused")

// ErrOutOfOrder marks a progress report out of stage or percentage order
// (HTTP 409); it matches ErrConflict.
var ErrOutOfOrder = fmt.Errorf("%w: progress out of order", ErrConflict)

// ParseAgentToken splits an agent token into its kind and subject (a task
// id, or a MAC in canonical form for a discovery session).
func ParseAgentToken(tok string) (kind, subject string, ok bool) {
	parts := strings.SplitN(tok, "_", 3)
	if len(parts) != 3 || len(parts[2]) < 40 {
		return "", "", false
	}
	switch parts[0] {
	case TokenBoot, TokenSession:
		if !validTaskID(parts[1]) {
			return "", "", false
		}
		return parts[0], parts[1], true
	case TokenDiscovery:
		mac, err := macFromHex(parts[1])
		if err != nil {
			return "", "", false
		}
		return parts[0], mac, true
	}
	return "", "", false
}

func newAgentToken(kind, subject string) string {
	if kind == TokenDiscovery {
		subject = strings.ReplaceAll(subject, ":", "")
	}
	return kind + "_" + subject + "_" + NewSecret()
}

func macFromHex(h string) (string, error) {
	if len(h) != 12 {
		return "", fmt.Errorf("%w: %q", ErrInvalid, h)
	}
	var b strings.Builder
	for i := 0; i < 12; i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return ParseMAC(b.String())
}

func hashesEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// bootToken is /tasks/{id}/bootstrap: the boot token of the newest iPXE
// script of the task. A newer script replaces it; redeeming deletes it.
type bootToken struct {
	SHA256   string    `json:"sha256"`
	Attempt  int       `json:"attempt"`
	IssuedAt time.Time `json:"issued_at"`
	Expires  time.Time `json:"expires"`
}

// Session is /tasks/{id}/session: the one agent session of a task. A new
// session (a new boot redeeming its boot token, a hand-over to a live
// agent) replaces it, which revokes the previous one.
type Session struct {
	SHA256  string `json:"sha256"`
	Attempt int    `json:"attempt"`
	// Run counts the sessions of the task: each is one run of the agent,
	// whose progress starts again at partitioning.
	Run      int       `json:"run"`
	IssuedAt time.Time `json:"issued_at"`
	Remote   string    `json:"remote"` // address it was issued to
	Via      string    `json:"via"`    // how: "boot token", "discovery", "retry"
	// BootSHA256 is the hash of the boot token it was exchanged for: a
	// second exchange of that token is recognised as a replay.
	BootSHA256 string `json:"boot_sha256,omitempty"`
	Rev        int64  `json:"-"` // etcd mod revision
}

func (s Session) describe() string {
	return fmt.Sprintf("issued %s via %s to %s", s.IssuedAt.Format(time.RFC3339), s.Via, s.Remote)
}

// DiscoverySession is /discovery-sessions/{mac}: the session of the agent
// of a machine without a task; the newest hardware report replaces it.
type DiscoverySession struct {
	SHA256   string    `json:"sha256"`
	RegionID string    `json:"region_id"`
	IssuedAt time.Time `json:"issued_at"`
	Remote   string    `json:"remote"`
}

func authEvent(id string, at time.Time, msg string) clientv3.Op {
	return eventOp(id, Event{At: at, Kind: "auth", Message: msg})
}

// IssueBootToken stores a fresh boot token for the current attempt of an
// active task, replacing any unredeemed one, and returns it.
func (s *Store) IssueBootToken(ctx context.Context, id string, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = DefaultBootTokenTTL
	}
	for range maxTxnRetries {
		st, rev, err := s.status(ctx, id)
		if err != nil {
			return "", err
		}
		if !st.Status.Active() {
			return "", &TransitionError{ID: id, From: st.Status, To: st.Status}
		}
		tok := newAgentToken(TokenBoot, id)
		now := time.Now().UTC()
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(statusKey(id)), "=", rev)).
			Then(clientv3.OpPut(bootstrapKey(id), mustJSON(bootToken{SHA256: hashSecret(tok), Attempt: st.Attempt, IssuedAt: now, Expires: now.Add(ttl)}))).Commit()
		if err != nil {
			return "", fmt.Errorf("store boot token of %s: %w", id, err)
		}
		if resp.Succeeded {
			return tok, nil
		}
	}
	return "", fmt.Errorf("store boot token of %s: %w: too much contention", id, ErrConflict)
}

// taskAuth is one consistent read of a task with its credentials.
type taskAuth struct {
	task    Task
	boot    *bootToken
	bootRev int64
	sess    *Session
}

func (s *Store) readTaskAuth(ctx context.Context, id string) (taskAuth, error) {
	if !validTaskID(id) {
		return taskAuth{}, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	resp, err := s.cli.Get(ctx, taskPrefix(id), clientv3.WithPrefix())
	if err != nil {
		return taskAuth{}, fmt.Errorf("read task %s: %w", id, err)
	}
	tasks := assembleTasks(resp.Kvs, s.log)
	if len(tasks) == 0 {
		return taskAuth{}, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	a := taskAuth{task: tasks[0]}
	for _, kv := range resp.Kvs {
		switch string(kv.Key) {
		case bootstrapKey(id):
			var b bootToken
			if err := json.Unmarshal(kv.Value, &b); err != nil {
				return taskAuth{}, fmt.Errorf("decode boot token of %s: %w", id, err)
			}
			a.boot, a.bootRev = &b, kv.ModRevision
		case sessionKey(id):
			var se Session
			if err := json.Unmarshal(kv.Value, &se); err != nil {
				return taskAuth{}, fmt.Errorf("decode session of %s: %w", id, err)
			}
			se.Rev = kv.ModRevision
			a.sess = &se
		}
	}
	return a, nil
}

// RedeemBootToken exchanges the boot token of task id for a new session
// issued to remote, in one transaction: the boot token is deleted, the
// previous session (if any) is replaced, and an event says who redeemed
// it. A boot token already redeemed is refused (ErrAuth) with an event
// naming remote; an unknown, expired or superseded one is refused without.
func (s *Store) RedeemBootToken(ctx context.Context, id, boot, remote string) (string, Task, error) {
	h := hashSecret(boot)
	for range maxTxnRetries {
		a, err := s.readTaskAuth(ctx, id)
		if err != nil {
			return "", Task{}, err
		}
		t, now := a.task, time.Now().UTC()
		if a.boot == nil || !hashesEqual(a.boot.SHA256, h) {
			if a.sess != nil && a.sess.BootSHA256 != "" && hashesEqual(a.sess.BootSHA256, h) {
				msg := fmt.Sprintf("boot token replayed from %s and refused: it was redeemed at %s by %s", remote, a.sess.IssuedAt.Format(time.RFC3339), a.sess.Remote)
				if _, err := s.cli.Txn(ctx).Then(authEvent(id, now, msg)).Commit(); err != nil {
					return "", t, fmt.Errorf("record replay on %s: %w", id, err)
				}
				return "", t, fmt.Errorf("%w: boot token of task %s was already redeemed (at %s by %s): a boot token works once; boot the machine again for a new one",
					ErrAuth, id, a.sess.IssuedAt.Format(time.RFC3339), a.sess.Remote)
			}
			return "", t, fmt.Errorf("%w: boot token not valid for task %s (superseded by a newer boot script, from an earlier attempt, or made up): boot the machine again", ErrAuth, id)
		}
		switch {
		case !t.Status.Status.Active():
			return "", t, fmt.Errorf("%w: task %s is %s", ErrAuth, id, t.Status.Status)
		case a.boot.Attempt != t.Status.Attempt:
			return "", t, fmt.Errorf("%w: boot token of attempt %d, task %s is at attempt %d: boot the machine again", ErrAuth, a.boot.Attempt, id, t.Status.Attempt)
		case now.After(a.boot.Expires):
			return "", t, fmt.Errorf("%w: boot token of task %s expired at %s: boot the machine again", ErrAuth, id, a.boot.Expires.Format(time.RFC3339))
		}
		tok := newAgentToken(TokenSession, id)
		se := Session{SHA256: hashSecret(tok), Attempt: t.Status.Attempt, Run: 1, IssuedAt: now, Remote: remote, Via: "boot token", BootSHA256: h}
		msg := fmt.Sprintf("agent session opened: boot token redeemed by %s", remote)
		sessRev := int64(0)
		if a.sess != nil {
			se.Run, sessRev = a.sess.Run+1, a.sess.Rev
			msg = fmt.Sprintf("agent session replaced: boot token redeemed by %s; the previous session (%s) is revoked", remote, a.sess.describe())
		}
		resp, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(statusKey(id)), "=", t.Revision),
			clientv3.Compare(clientv3.ModRevision(bootstrapKey(id)), "=", a.bootRev),
			clientv3.Compare(clientv3.ModRevision(sessionKey(id)), "=", sessRev),
		).Then(
			clientv3.OpDelete(bootstrapKey(id)),
			clientv3.OpPut(sessionKey(id), mustJSON(se)),
			authEvent(id, now, msg),
		).Commit()
		if err != nil {
			return "", t, fmt.Errorf("redeem boot token of %s: %w", id, err)
		}
		if resp.Succeeded {
			return tok, t, nil
		}
	}
	return "", Task{}, fmt.Errorf("redeem boot token of %s: %w: too much contention", id, ErrConflict)
}

// CheckSession returns the session that token opens and its task, or
// ErrAuth saying what happened to it (revoked, and by which session).
// The session may belong to an earlier attempt, or to a task that ended:
// the caller decides what such a session may still do.
func (s *Store) CheckSession(ctx context.Context, id, token string) (Session, Task, error) {
	a, err := s.readTaskAuth(ctx, id)
	if err != nil {
		return Session{}, Task{}, err
	}
	switch {
	case a.sess == nil:
		return Session{}, a.task, fmt.Errorf("%w: task %s has no agent session: boot the machine again", ErrAuth, id)
	case !hashesEqual(a.sess.SHA256, hashSecret(token)):
		return Session{}, a.task, fmt.Errorf("%w: this agent session of task %s was revoked: a newer session replaced it (%s); if that was not this machine booting again, someone else used its boot script",
			ErrAuth, id, a.sess.describe())
	}
	return *a.sess, a.task, nil
}

// IssueSession hands a new session of active task id to remote, replacing
// the current one. ifRev guards the replacement: the session's mod revision
// the caller checked (so of two holders of one session only one is handed
// the next), or -1 for none. why goes into the task's event.
func (s *Store) IssueSession(ctx context.Context, id string, ifRev int64, remote, via, why string) (string, Task, error) {
	for range maxTxnRetries {
		a, err := s.readTaskAuth(ctx, id)
		if err != nil {
			return "", Task{}, err
		}
		t := a.task
		if !t.Status.Status.Active() {
			return "", t, &TransitionError{ID: id, From: t.Status.Status, To: t.Status.Status}
		}
		now := time.Now().UTC()
		tok := newAgentToken(TokenSession, id)
		se := Session{SHA256: hashSecret(tok), Attempt: t.Status.Attempt, Run: 1, IssuedAt: now, Remote: remote, Via: via}
		cur := int64(0)
		if a.sess != nil {
			se.Run, cur = a.sess.Run+1, a.sess.Rev
		}
		if ifRev >= 0 && cur != ifRev {
			return "", t, fmt.Errorf("%w: the agent session of task %s was replaced meanwhile", ErrAuth, id)
		}
		resp, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(statusKey(id)), "=", t.Revision),
			clientv3.Compare(clientv3.ModRevision(sessionKey(id)), "=", cur),
		).Then(
			clientv3.OpPut(sessionKey(id), mustJSON(se)),
			authEvent(id, now, fmt.Sprintf("agent session handed to %s: %s", remote, why)),
		).Commit()
		if err != nil {
			return "", t, fmt.Errorf("issue session of %s: %w", id, err)
		}
		if resp.Succeeded {
			return tok, t, nil
		}
	}
	return "", Task{}, fmt.Errorf("issue session of %s: %w: too much contention", id, ErrConflict)
}

// OpenDiscoverySession gives the agent of a machine without a task a new
// discovery session, replacing (revoking) the previous one of that MAC.
func (s *Store) OpenDiscoverySession(ctx context.Context, region, mac, remote string) (string, error) {
	mac, err := ParseMAC(mac)
	if err != nil {
		return "", err
	}
	tok := newAgentToken(TokenDiscovery, mac)
	ds := DiscoverySession{SHA256: hashSecret(tok), RegionID: region, IssuedAt: time.Now().UTC(), Remote: remote}
	if _, err := s.cli.Put(ctx, discoveryKey(mac), mustJSON(ds)); err != nil {
		return "", fmt.Errorf("store discovery session of %s: %w", mac, err)
	}
	return tok, nil
}

// CheckDiscoverySession returns the discovery session token opens for mac,
// or ErrAuth saying what replaced it.
func (s *Store) CheckDiscoverySession(ctx context.Context, mac, token string) (DiscoverySession, error) {
	mac, err := ParseMAC(mac)
	if err != nil {
		return DiscoverySession{}, err
	}
	resp, err := s.cli.Get(ctx, discoveryKey(mac))
	if err != nil {
		return DiscoverySession{}, fmt.Errorf("read discovery session of %s: %w", mac, err)
	}
	if len(resp.Kvs) == 0 {
		return DiscoverySession{}, fmt.Errorf("%w: no discovery session for %s (handed over to a task, or forgotten): report the hardware again", ErrAuth, mac)
	}
	var ds DiscoverySession
	if err := json.Unmarshal(resp.Kvs[0].Value, &ds); err != nil {
		return DiscoverySession{}, fmt.Errorf("decode discovery session of %s: %w", mac, err)
	}
	if !hashesEqual(ds.SHA256, hashSecret(token)) {
		return DiscoverySession{}, fmt.Errorf("%w: discovery session of %s was replaced at %s by a newer hardware report from %s",
			ErrAuth, mac, ds.IssuedAt.Format(time.RFC3339), ds.Remote)
	}
	return ds, nil
}

// DeleteDiscoverySession forgets the discovery session of mac (no error
// when there is none).
func (s *Store) DeleteDiscoverySession(ctx context.Context, mac string) error {
	mac, err := ParseMAC(mac)
	if err != nil {
		return err
	}
	if _, err := s.cli.Delete(ctx, discoveryKey(mac)); err != nil {
		return fmt.Errorf("delete discovery session of %s: %w", mac, err)
	}
	return nil
}

// The install stages in order, with the percentage range each covers.
var stageOrder = []struct {
	name     string
	from, to int
}{
	{wire.StagePartitioning, 0, 20},
	{wire.StageDownloading, 20, 60},
	{wire.StageInstalling, 60, 90},
	{wire.StageConfiguring, 90, 100},
	{wire.StageCompleted, 100, 100},
}

func stageIndex(stage string) int {
	for i, s := range stageOrder {
		if s.name == stage {
			return i
		}
	}
	return -1
}

// ReportAgentProgress is ReportProgress for a report from an agent's
// session (p.Run is the session's run): the stage must be one of the
// install stages with its percentage in the stage's range (else
// ErrInvalid), and within one run stages go forward one at a time,
// percentages never go back, and "completed" follows "configuring" at 100
// (else ErrOutOfOrder naming the expected stage). A new run (the machine
// booted again and its agent starts over) starts at partitioning.
func (s *Store) ReportAgentProgress(ctx context.Context, id string, p wire.Progress) (ProgressResult, error) {
	i := stageIndex(p.Stage)
	if i < 0 {
		return ProgressResult{}, fmt.Errorf("%w: stage %q: want partitioning, downloading, installing, configuring or completed", ErrInvalid, p.Stage)
	}
	if st := stageOrder[i]; p.Percentage < st.from || p.Percentage > st.to {
		return ProgressResult{}, fmt.Errorf("%w: percentage %d is outside %d-%d, the range of stage %s", ErrInvalid, p.Percentage, st.from, st.to, p.Stage)
	}
	return s.reportProgress(ctx, id, p, func(old *wire.Progress, attempt int) error {
		return checkOrder(old, attempt, p)
	})
}

// ProgressBehindError is the ErrOutOfOrder of a report that goes forward
// from something etcd does not hold: the first report of a run past
// partitioning, a skipped stage, completed before configuring at 100.
// The agent reported what is missing and was answered (the region
// answers some reports before it writes them, store/fastprogress.go, and
// a restart loses those not written yet), so the answer asks it to send
// them again from Expected on (wire.Error.ResendFrom). A report that goes
// back is not one.
type ProgressBehindError struct {
	Expected string // the first stage whose report is missing
	err      error
}

func (e *ProgressBehindError) Error() string { return e.err.Error() }
func (e *ProgressBehindError) Unwrap() error { return e.err }

func behind(expected, format string, args ...any) error {
	return &ProgressBehindError{Expected: expected, err: fmt.Errorf(format, args...)}
}

func checkOrder(old *wire.Progress, attempt int, p wire.Progress) error {
	i := stageIndex(p.Stage)
	if old == nil || old.Attempt != attempt || old.Run != p.Run {
		if i != 0 {
			return behind(wire.StagePartitioning, "%w: stage %s as the first report of this agent run: expected stage %s", ErrOutOfOrder, p.Stage, wire.StagePartitioning)
		}
		return nil
	}
	o := stageIndex(old.Stage)
	if o < 0 {
		return nil // a report stored without the rules: nothing to compare with
	}
	next := stageOrder[min(o+1, len(stageOrder)-1)].name
	switch {
	case i < o:
		return fmt.Errorf("%w: stage %s after %s: stages never go back; expected stage %s or %s", ErrOutOfOrder, p.Stage, old.Stage, old.Stage, next)
	case i == o && p.Percentage < old.Percentage:
		return fmt.Errorf("%w: %d%% after %d%% in stage %s: percentages never go back; expected stage %s at %d%% or more", ErrOutOfOrder, p.Percentage, old.Percentage, old.Stage, old.Stage, old.Percentage)
	case i > o+1:
		return behind(next, "%w: stage %s after %s: expected stage %s", ErrOutOfOrder, p.Stage, old.Stage, next)
	case i == o+1 && p.Stage == wire.StageCompleted && old.Percentage != 100:
		return behind(wire.StageConfiguring, "%w: completed only after configuring reached 100%% (it is at %d%%): expected stage %s", ErrOutOfOrder, old.Percentage, wire.StageConfiguring)
	}
	return nil
}
