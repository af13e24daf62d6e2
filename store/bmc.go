package store

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A machine's BMC (issue 13) is kept beside its task at /tasks/{id}/bmc,
// never in the spec: the spec is in every API answer and /ws message, the
// BMC record only in the redacted form BMCInfo. The password is sealed
// with AES-256-GCM under the cluster key (<data-dir>/pki/cluster.key, the
// key that seals the CA key, see cakey.go), with the record's etcd key as
// associated data, so a sealed password copied to another task's record
// does not open.

// BMC protocols.
const (
	BMCProtocolIPMI    = "ipmi"
	BMCProtocolRedfish = "redfish"
)

// BMCInput is a BMC as an operator gives it (POST /api/v1/tasks "bmc",
// PUT /api/v1/tasks/{id}/bmc). The password is only ever in a request.
type BMCInput struct {
	Protocol string `json:"protocol"`
	// Address is host[:port] (IPMI default 623, Redfish 443), or for
	// Redfish an http(s) URL.
	Address  string `json:"address"`
	Username string `json:"username"`
	Password string `json:"password"`
	// SystemID is the Redfish ComputerSystem id; empty: the only system.
	SystemID string `json:"system_id,omitempty"`
	// InsecureSkipVerify skips Redfish TLS verification (self-signed BMCs).
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
}

// BMCInfo is a task's BMC as API answers and /ws show it: no password.
type BMCInfo struct {
	Protocol           string `json:"protocol"`
	Address            string `json:"address"`
	Username           string `json:"username"`
	SystemID           string `json:"system_id,omitempty"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify,omitempty"`
	PasswordSet        bool   `json:"password_set"`
}

// String names the BMC without credentials, for events and logs.
func (b BMCInfo) String() string {
	s := b.Protocol + " BMC " + b.Address
	if b.SystemID != "" {
		s += " system " + b.SystemID
	}
	return s
}

// bmcRecord is the value of /tasks/{id}/bmc.
type bmcRecord struct {
	BMCInfo
	PasswordSealed string `json:"password_sealed,omitempty"` // base64(nonce || AES-256-GCM ciphertext)
	KeyID          string `json:"key_id,omitempty"`          // the cluster key it is sealed under (keyID)
}

// Validate checks the BMC and names the field at fault
// ("bmc.address: ..."), wrapped in ErrInvalid.
func (b *BMCInput) Validate() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: bmc.%s: %s", ErrInvalid, field, fmt.Sprintf(format, a...))
	}
	b.Protocol = strings.ToLower(strings.TrimSpace(b.Protocol))
	b.Address = strings.TrimSpace(b.Address)
	switch b.Protocol {
	case BMCProtocolIPMI, BMCProtocolRedfish:
	case "":
		return bad("protocol", "missing: use ipmi or redfish")
	default:
		return bad("protocol", "%q: use ipmi or redfish", truncate(b.Protocol, 20))
	}
	if b.Address == "" {
		return bad("address", "missing: host[:port] of the BMC")
	}
	if len(b.Address) > 256 {
		return bad("address", "longer than 256 bytes")
	}
	if err := checkBMCAddress(b.Protocol, b.Address); err != nil {
		return bad("address", "%q: %v", truncate(b.Address, 60), err)
	}
	if b.Username == "" {
		return bad("username", "missing")
	}
	if len(b.Username) > 64 || strings.ContainsAny(b.Username, "\x00\r\n") {
		return bad("username", "at most 64 bytes, one line")
	}
	if b.Password == "" {
		return bad("password", "missing")
	}
	if len(b.Password) > 256 {
		return bad("password", "longer than 256 bytes")
	}
	switch b.Protocol {
	case BMCProtocolIPMI:
		if len(b.Username) > 16 {
			return bad("username", "IPMI user names are at most 16 characters")
		}
		if len(b.Password) > 20 {
			return bad("password", "IPMI passwords are at most 20 characters")
		}
		if b.SystemID != "" {
			return bad("system_id", "only for redfish")
		}
		if b.InsecureSkipVerify {
			return bad("insecure_skip_verify", "only for redfish (IPMI has no TLS)")
		}
	case BMCProtocolRedfish:
		if b.SystemID != "" && !validName(b.SystemID, 128) {
			return bad("system_id", "%q: use letters, digits, '.', '-' or '_'", truncate(b.SystemID, 40))
		}
	}
	return nil
}

func checkBMCAddress(protocol, addr string) error {
	if strings.Contains(addr, "://") {
		if protocol != BMCProtocolRedfish {
			return errors.New("an IPMI address is host[:port], not a URL")
		}
		u, err := url.Parse(addr)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			return errors.New("a Redfish URL is https://host[:port] (no user, the credentials are separate fields)")
		}
		if p := strings.Trim(u.Path, "/"); p != "" && p != "redfish/v1" || u.RawQuery != "" || u.Fragment != "" {
			return errors.New("a Redfish URL has no path (the system id is its own field)")
		}
		return nil
	}
	host, port := addr, ""
	if h, p, err := net.SplitHostPort(addr); err == nil {
		host, port = h, p
	} else if strings.Count(addr, ":") == 1 {
		return errors.New("port is not a number")
	}
	if host == "" {
		return errors.New("host is empty")
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == ':' || r == '%' || r == '_') {
			return errors.New("host is not a name or an IP address")
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			return fmt.Errorf("port %q: use 1-65535", port)
		}
	}
	return nil
}

// bmcAAD binds a sealed password to the key it is stored under.
func bmcAAD(key string) []byte { return []byte("lpmos bmc password\x00" + key) }

// errNoClusterKey: this process cannot seal or open BMC passwords.
var errNoClusterKey = errors.New("this lpmos has no cluster key (<data-dir>/pki/" + ClusterKeyFile + ") to encrypt BMC passwords with: BMCs need the embedded etcd member (not --etcd-endpoints), or copy the key from another member")

// sealBMC builds the stored record for in under key.
func (s *Store) sealBMC(key string, in BMCInput) (bmcRecord, error) {
	if s.clusterKey == nil {
		return bmcRecord{}, fmt.Errorf("%w: bmc: %v", ErrInvalid, errNoClusterKey)
	}
	aead, err := gcm(s.clusterKey)
	if err != nil {
		return bmcRecord{}, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return bmcRecord{}, fmt.Errorf("nonce: %w", err)
	}
	ct := aead.Seal(nonce, nonce, []byte(in.Password), bmcAAD(key))
	return bmcRecord{
		BMCInfo: BMCInfo{Protocol: in.Protocol, Address: in.Address, Username: in.Username, SystemID: in.SystemID,
			InsecureSkipVerify: in.InsecureSkipVerify, PasswordSet: true},
		PasswordSealed: base64.StdEncoding.EncodeToString(ct),
		KeyID:          keyID(s.clusterKey),
	}, nil
}

// openBMC returns the BMC of a stored record with its password.
func (s *Store) openBMC(key string, rec bmcRecord) (BMCInput, error) {
	out := BMCInput{Protocol: rec.Protocol, Address: rec.Address, Username: rec.Username, SystemID: rec.SystemID,
		InsecureSkipVerify: rec.InsecureSkipVerify}
	if rec.PasswordSealed == "" {
		return out, nil
	}
	if s.clusterKey == nil {
		return out, errNoClusterKey
	}
	if rec.KeyID != keyID(s.clusterKey) {
		return out, fmt.Errorf("the BMC password is sealed under another cluster key (id %s, this member's is %s): copy <data-dir>/pki/%s from the first member", rec.KeyID, keyID(s.clusterKey), ClusterKeyFile)
	}
	ct, err := base64.StdEncoding.DecodeString(rec.PasswordSealed)
	if err != nil {
		return out, fmt.Errorf("decode sealed BMC password: %w", err)
	}
	aead, err := gcm(s.clusterKey)
	if err != nil {
		return out, err
	}
	if len(ct) < aead.NonceSize() {
		return out, errors.New("sealed BMC password too short")
	}
	pw, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], bmcAAD(key))
	if err != nil {
		return out, fmt.Errorf("open sealed BMC password of %s: %w", key, err)
	}
	out.Password = string(pw)
	return out, nil
}

// CreateOption adds to what CreateTask writes.
type CreateOption func(*createOptions)

type createOptions struct{ bmc *BMCInput }

// WithBMC stores the machine's BMC with the new task (validated, the
// password sealed), in the same transaction. nil: none.
func WithBMC(b *BMCInput) CreateOption { return func(o *createOptions) { o.bmc = b } }

// createOps returns the extra ops of CreateTask's transaction for task id
// and the task's BMC as answers show it: the BMC of the options, else the
// one stored for the MAC's discovered machine (re-sealed for the task).
func (s *Store) createOps(ctx context.Context, id, mac string, now time.Time, opts []CreateOption) ([]clientv3.Op, *BMCInfo, error) {
	var o createOptions
	for _, fn := range opts {
		fn(&o)
	}
	in, from := o.bmc, ""
	if in == nil {
		m, err := s.machineBMC(ctx, mac)
		if err != nil || m == nil {
			return nil, nil, err
		}
		in, from = m, "BMC taken from the discovered machine "+mac+": "
	} else if err := in.Validate(); err != nil {
		return nil, nil, err
	}
	rec, err := s.sealBMC(bmcKey(id), *in)
	if err != nil {
		return nil, nil, err
	}
	ops := []clientv3.Op{clientv3.OpPut(bmcKey(id), mustJSON(rec))}
	if from != "" {
		ops = append(ops, eventOp(id, Event{At: now.Add(time.Nanosecond), Kind: EventKindPower, Message: from + rec.BMCInfo.String()}))
	}
	return ops, &rec.BMCInfo, nil
}

// machineBMC opens the BMC stored for a MAC's discovered machine (nil: none).
func (s *Store) machineBMC(ctx context.Context, mac string) (*BMCInput, error) {
	resp, err := s.cli.Get(ctx, machineBMCKey(mac))
	if err != nil {
		return nil, fmt.Errorf("read BMC of machine %s: %w", mac, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var rec bmcRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return nil, fmt.Errorf("decode BMC of machine %s: %w", mac, err)
	}
	in, err := s.openBMC(machineBMCKey(mac), rec)
	if err != nil {
		return nil, fmt.Errorf("BMC of machine %s: %w", mac, err)
	}
	return &in, nil
}

// SetMachineBMC sets (nil: removes) the BMC of a discovered machine; the
// next task created for its MAC without a BMC of its own takes it.
func (s *Store) SetMachineBMC(ctx context.Context, mac string, in *BMCInput) (*BMCInfo, error) {
	mac, err := ParseMAC(mac)
	if err != nil {
		return nil, err
	}
	if in == nil {
		resp, err := s.cli.Delete(ctx, machineBMCKey(mac))
		if err != nil {
			return nil, fmt.Errorf("delete BMC of machine %s: %w", mac, err)
		}
		if resp.Deleted == 0 {
			return nil, fmt.Errorf("%w: machine %s has no BMC", ErrNotFound, mac)
		}
		return nil, nil
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	rec, err := s.sealBMC(machineBMCKey(mac), *in)
	if err != nil {
		return nil, err
	}
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(machineKey(mac)), ">", 0)).
		Then(clientv3.OpPut(machineBMCKey(mac), mustJSON(rec))).Commit()
	if err != nil {
		return nil, fmt.Errorf("store BMC of machine %s: %w", mac, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%w: no discovered machine %s (a machine's BMC is for a discovered machine; give a task its BMC with --bmc)", ErrNotFound, mac)
	}
	return &rec.BMCInfo, nil
}

// MachineBMC returns a discovered machine's BMC without its password.
func (s *Store) MachineBMC(ctx context.Context, mac string) (*BMCInfo, error) {
	mac, err := ParseMAC(mac)
	if err != nil {
		return nil, err
	}
	resp, err := s.cli.Get(ctx, machineBMCKey(mac))
	if err != nil {
		return nil, fmt.Errorf("read BMC of machine %s: %w", mac, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: machine %s has no BMC", ErrNotFound, mac)
	}
	return decodeBMCInfo(resp.Kvs[0].Value)
}

// SetTaskBMC sets (or, with nil, removes) the BMC of an existing task and
// records who did it in the task's events.
func (s *Store) SetTaskBMC(ctx context.Context, id string, in *BMCInput, actor string) (*BMCInfo, error) {
	if !validTaskID(id) {
		return nil, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	now := time.Now().UTC()
	var (
		op   clientv3.Op
		info *BMCInfo
		msg  string
	)
	if in == nil {
		op, msg = clientv3.OpDelete(bmcKey(id)), "BMC removed by "+actor
	} else {
		if err := in.Validate(); err != nil {
			return nil, err
		}
		rec, err := s.sealBMC(bmcKey(id), *in)
		if err != nil {
			return nil, err
		}
		op, info, msg = clientv3.OpPut(bmcKey(id), mustJSON(rec)), &rec.BMCInfo, fmt.Sprintf("BMC set to %s (user %s) by %s", rec.BMCInfo, rec.Username, actor)
	}
	ops, err := s.boundEvents(ctx, id, []clientv3.Op{op, eventOp(id, Event{At: now, Kind: EventKindPower, Message: msg})})
	if err != nil {
		return nil, err
	}
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(specKey(id)), ">", 0)).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("store BMC of %s: %w", id, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	return info, nil
}

// TaskBMC returns a task's BMC with its password opened, for the region
// that performs power actions; ErrNotFound when the task has none.
func (s *Store) TaskBMC(ctx context.Context, id string) (BMCInput, error) {
	if !validTaskID(id) {
		return BMCInput{}, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	resp, err := s.cli.Get(ctx, bmcKey(id))
	if err != nil {
		return BMCInput{}, fmt.Errorf("read BMC of %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return BMCInput{}, fmt.Errorf("%w: task %s has no BMC", ErrNotFound, id)
	}
	var rec bmcRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return BMCInput{}, fmt.Errorf("decode BMC of %s: %w", id, err)
	}
	return s.openBMC(bmcKey(id), rec)
}

// decodeBMCInfo reads the redacted part of a stored record.
func decodeBMCInfo(v []byte) (*BMCInfo, error) {
	var rec bmcRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, err
	}
	rec.PasswordSet = rec.PasswordSealed != ""
	return &rec.BMCInfo, nil
}
