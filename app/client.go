package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/spf13/cobra"
)

// clientOptions are the flags every command that talks to the control
// plane shares.
type clientOptions struct {
	server  string
	token   string
	dataDir string
	output  string
	caCert  string // --ca-cert (app/clienttls.go)
}

func (o *clientOptions) addFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&o.server, "server", "https://localhost:8080", "control plane URL (host:port means https://host:port)")
	f.StringVar(&o.caCert, "ca-cert", "", "CA certificate the control plane's HTTPS certificate must chain to (default: <data-dir>/pki/ca.crt when it exists, else the system's CAs)")
	f.StringVar(&o.token, "token", "", "admin token (default: LPMOS_TOKEN, then <data-dir>/admin.token)")
	f.StringVar(&o.dataDir, "data-dir", "./lpmos-data", "data dir of a local lpmos, to find admin.token")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table, wide, json, yaml, or name (ids only)")
	_ = cmd.RegisterFlagCompletionFunc("output", completeOutput) // every list completes -o (app/completion.go)
}

// apiClient is a small client for the control plane REST API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func (o *clientOptions) client() (*apiClient, error) {
	tok := o.token
	if tok == "" {
		path := filepath.Join(o.dataDir, "admin.token")
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("no admin token: pass --token, set LPMOS_TOKEN, or run where %s exists (%w)", path, err)
		}
		tok = strings.TrimSpace(string(data))
	}
	if err := checkOutput(o.output); err != nil { // app/output.go
		return nil, err
	}
	o.server = normalizeServer(o.server)
	hc, err := o.httpClient()
	if err != nil {
		return nil, err
	}
	return &apiClient{base: strings.TrimRight(o.server, "/"), token: tok, http: hc}, nil
}

// APIError is an error answer of the control plane.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	if _, ok := ctx.Deadline(); !ok { // a caller's own deadline wins (image add reads whole images)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (%s)", method, c.base+path, err, connectHint(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e wire.Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
