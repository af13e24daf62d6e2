package app_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/app"
)

// TestCLITLSErrorsNameTheFix: each way the CLI's HTTPS call can fail says
// what to do (the flag to add or change); with the right CA and name it
// works.
func TestCLITLSErrorsNameTheFix(t *testing.T) {
	t.Parallel()
	list := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{}")) })
	tlsSrv := httptest.NewUnstartedServer(list)
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	tlsSrv.StartTLS()                                   // certificate for 127.0.0.1, ::1, example.com
	defer tlsSrv.Close()
	plain := httptest.NewServer(list)
	defer plain.Close()
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	tlsPort := tlsSrv.URL[strings.LastIndex(tlsSrv.URL, ":"):]
	for _, tc := range []struct {
		name   string
		server string
		ca     string
		want   string // "" = success
	}{
		{"unknown CA", tlsSrv.URL, "", "add --ca-cert"},
		{"wrong name", "https://localhost" + tlsPort, caFile, "does not name this host"},
		{"plain HTTP server", strings.Replace(plain.URL, "http://", "https://", 1), "", "use --server http://"},
		{"right CA and name", tlsSrv.URL, caFile, ""},
		{"plain HTTP on purpose", plain.URL, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			root := app.NewRoot("test", &out, &errOut)
			args := []string{"task", "list", "-o", "json", "--token", "x", "--data-dir", t.TempDir(), "--server", tc.server}
			if tc.ca != "" {
				args = append(args, "--ca-cert", tc.ca)
			}
			root.SetArgs(args)
			err := root.ExecuteContext(context.Background())
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want success, got %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
