package ui

import (
	"net/http"

	"github.com/lpmos/lpmos/internal/apispec"
)

// serveOpenAPI serves GET /api/v1/openapi.json: the OpenAPI 3.1
// description of the control plane and agent APIs (internal/apispec), open
// like /api/v1/health.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(apispec.JSON())
}
