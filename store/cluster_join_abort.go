package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// prefixJoinAdds holds, for an hour after each admission, what a joiner
// needs to prove to take its own add back (AbortJoin): the hash of the
// token secret it used and of its CSR.
const prefixJoinAdds = "/cluster/join-adds/"

// joinAddTTL bounds how long a joiner may take its add back.
const joinAddTTL = time.Hour

type joinAddRecord struct {
	TokenID      string    `json:"token_id"`
	SecretSHA256 string    `json:"secret_sha256"`
	CSRSHA256    string    `json:"csr_sha256"`
	PeerURL      string    `json:"peer_url"`
	Name         string    `json:"name"`
	AddedAt      time.Time `json:"added_at"`
}

// AbortJoinRequest is the body of POST /api/v1/cluster/join/abort: the
// same token proof and CSR as the join, and the member id it got.
type AbortJoinRequest struct {
	JoinRequest
	MemberID string `json:"member_id"`
}

func csrHash(der []byte) string {
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
}

// recordJoinAdd remembers an admission so the joiner can take it back.
func (s *Store) recordJoinAdd(ctx context.Context, id uint64, req JoinRequest, tok joinTokenRecord, csrDER []byte) {
	rec := joinAddRecord{TokenID: req.TokenID, SecretSHA256: tok.SHA256, CSRSHA256: csrHash(csrDER),
		PeerURL: req.PeerURL, Name: req.Name, AddedAt: time.Now().UTC()}
	lease, err := s.cli.Grant(ctx, int64(joinAddTTL/time.Second))
	if err == nil {
		_, err = s.cli.Put(ctx, prefixJoinAdds+strconv.FormatUint(id, 16), mustJSON(rec), clientv3.WithLease(lease.ID))
	}
	if err != nil {
		s.log.Warn("store: could not record the join for a later abort", "name", req.Name, "error", err)
	}
}

// AbortJoin removes a member a join added, when that join failed on the
// joiner's side after the admission. Only the joiner can do it: it proves
// the same token secret over the same CSR it was admitted with. A
// single-use token the join used becomes usable again.
func (s *Store) AbortJoin(ctx context.Context, req AbortJoinRequest) (Member, error) {
	if s.etcd == nil {
		return Member{}, ErrNotEmbedded
	}
	denied := fmt.Errorf("%w: no join to abort for member %q with this proof", ErrJoinDenied, req.MemberID)
	id, err := strconv.ParseUint(req.MemberID, 16, 64)
	if err != nil {
		return Member{}, fmt.Errorf("%w: member id %q: want hex", ErrInvalid, req.MemberID)
	}
	csr, err := pki.ParseCSR([]byte(req.CSR))
	if err != nil {
		return Member{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	key := prefixJoinAdds + strconv.FormatUint(id, 16)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return Member{}, fmt.Errorf("read join record: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Member{}, denied
	}
	var rec joinAddRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return Member{}, fmt.Errorf("decode join record: %w", err)
	}
	want := joinProofWithHash(rec.SecretSHA256, csr.Raw)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(req.Proof))) || rec.CSRSHA256 != csrHash(csr.Raw) || rec.TokenID != req.TokenID {
		return Member{}, denied
	}
	list, err := s.cli.MemberList(ctx)
	if err != nil {
		return Member{}, fmt.Errorf("list members: %w", err)
	}
	found := false
	for _, m := range list.Members {
		if m.ID == id {
			found = true
		}
	}
	var m Member
	if found {
		if m, err = s.RemoveMember(ctx, strconv.FormatUint(id, 16)); err != nil {
			return Member{}, err
		}
	} else {
		m = Member{ID: strconv.FormatUint(id, 16), Name: rec.Name, PeerURLs: []string{rec.PeerURL}, ClientURLs: []string{}, Regions: []string{}}
	}
	if _, err := s.cli.Delete(ctx, key); err != nil {
		s.log.Warn("store: could not delete a join record", "key", key, "error", err)
	}
	s.releaseSingleUse(ctx, rec.TokenID, rec.PeerURL)
	s.log.Info("store: join aborted by the joiner, member removed", "name", rec.Name, "id", m.ID, "was_member", found)
	return m, nil
}

// releaseSingleUse makes a single-use token that peerURL used usable again.
func (s *Store) releaseSingleUse(ctx context.Context, tokenID, peerURL string) {
	resp, err := s.cli.Get(ctx, joinTokenKey(tokenID))
	if err != nil || len(resp.Kvs) == 0 {
		return
	}
	var tok joinTokenRecord
	if json.Unmarshal(resp.Kvs[0].Value, &tok) != nil || !tok.SingleUse || tok.UsedBy != peerURL {
		return
	}
	tok.UsedBy = ""
	if _, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(joinTokenKey(tokenID)), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(joinTokenKey(tokenID), mustJSON(tok), clientv3.WithIgnoreLease())).Commit(); err != nil {
		s.log.Warn("store: could not release a single-use join token", "token", tokenID, "error", err)
	}
}
