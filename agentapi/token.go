package agentapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const secretBytes = 32

// loadSecret returns the region secret: random in memory when path is
// empty, else read from path, which is created (mode 0600) on first use.
func loadSecret(path string) ([]byte, error) {
	if path == "" {
		return newSecret(), nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		secret := newSecret()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("region secret: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("region secret: %w", err)
		}
		_, werr := f.WriteString(base64.RawURLEncoding.EncodeToString(secret) + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("region secret: write %s: %w", path, werr)
		}
		return secret, nil
	}
	if err != nil {
		return nil, fmt.Errorf("region secret: %w", err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("region secret %s is readable by others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	secret, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(secret) < secretBytes {
		return nil, fmt.Errorf("region secret %s: want %d random bytes in unpadded base64url; delete it to make a new one", path, secretBytes)
	}
	return secret, nil
}

func newSecret() []byte {
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return b
}

// token derives the agent token of one attempt of a task:
// base64url(HMAC-SHA256(secret, id "/" attempt)). The store keeps only its
// hash; the region recomputes it whenever it renders an iPXE script.
func (r *Region) token(id string, attempt int) string {
	m := hmac.New(sha256.New, r.secret)
	m.Write([]byte(id + "/" + strconv.Itoa(attempt)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// derivedMatches reports, in constant time, whether token is the one this
// region derives for the task's attempt. It is used only to accept an
// idempotent replay (a repeated "completed" or failure report) after the
// store deleted the token with the ended task.
func (r *Region) derivedMatches(id string, attempt int, token string) bool {
	return subtle.ConstantTimeCompare([]byte(r.token(id, attempt)), []byte(token)) == 1
}
