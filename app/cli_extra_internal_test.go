package app

import "testing"

func TestHardwareSummaryLeavesOutWhatIsMissing(t *testing.T) {
	for _, tc := range []struct {
		vendor, product string
		threads, mem    int
		want            string
	}{
		{"Dell Inc.", "PowerEdge R640", 64, 256, "Dell Inc. PowerEdge R640, 64 threads, 256 GB"},
		{"", "", 2, 0, "2 threads"}, // was "hardware:  , 2 threads"
		{" QEMU ", "", 0, 4, "QEMU, 4 GB"},
		{"", "", 0, 0, "unknown hardware"},
	} {
		if got := hardwareSummary(tc.vendor, tc.product, tc.threads, tc.mem); got != tc.want {
			t.Errorf("hardwareSummary(%q, %q, %d, %d) = %q, want %q", tc.vendor, tc.product, tc.threads, tc.mem, got, tc.want)
		}
	}
}

func TestNormalizeServer(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080":         "https://127.0.0.1:8080",
		"lpmos.lab:8443":         "https://lpmos.lab:8443",
		"http://127.0.0.1:8080":  "http://127.0.0.1:8080",
		"https://localhost:8080": "https://localhost:8080",
		" [::1]:8080 ":           "https://[::1]:8080",
	} {
		if got := normalizeServer(in); got != want {
			t.Errorf("normalizeServer(%q) = %q, want %q", in, got, want)
		}
	}
}
