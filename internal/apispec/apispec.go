// Package apispec holds lpmos's OpenAPI 3.1 description (openapi.json,
// written by hand and embedded), the check that it matches the routers,
// and a small JSON Schema checker for the subset of schema keywords the
// description uses, so tests validate real responses against it.
package apispec

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

//go:embed openapi.json
var specJSON []byte

// File is where the description lives in the repository.
const File = "internal/apispec/openapi.json"

// Listener values of a path item's x-lpmos-listener: which server routes it.
const (
	ControlPlane = "control-plane" // --listen-addr (the default when absent)
	Agent        = "agent"         // --api-port
)

// JSON returns the description as served at /api/v1/openapi.json.
func JSON() []byte { return specJSON }

// Doc is the parsed description.
type Doc struct {
	Paths   map[string]map[string]json.RawMessage
	schemas map[string]any
}

// Load parses the embedded description.
func Load() (*Doc, error) {
	var raw struct {
		OpenAPI    string                                `json:"openapi"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(specJSON, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", File, err)
	}
	if !strings.HasPrefix(raw.OpenAPI, "3.1.") {
		return nil, fmt.Errorf("%s: openapi %q, want 3.1.x", File, raw.OpenAPI)
	}
	return &Doc{Paths: raw.Paths, schemas: raw.Components.Schemas}, nil
}

// Operations returns "METHOD /path" of every documented operation served
// by listener.
func (d *Doc) Operations(listener string) map[string]bool {
	out := map[string]bool{}
	for p, item := range d.Paths {
		l := ControlPlane
		if raw, ok := item["x-lpmos-listener"]; ok {
			_ = json.Unmarshal(raw, &l)
		}
		if l != listener {
			continue
		}
		for _, m := range []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"} {
			if _, ok := item[m]; ok {
				out[strings.ToUpper(m)+" "+p] = true
			}
		}
	}
	return out
}

// PathOf turns a chi route pattern into its OpenAPI path: regexps of
// parameters are dropped and a trailing wildcard is the parameter {path}.
func PathOf(route string) string {
	if strings.HasSuffix(route, "/*") {
		route = strings.TrimSuffix(route, "*") + "{path}"
	}
	var b strings.Builder
	for {
		i := strings.Index(route, "{")
		if i < 0 {
			b.WriteString(route)
			break
		}
		j := strings.Index(route[i:], "}")
		if j < 0 {
			b.WriteString(route)
			break
		}
		name, _, _ := strings.Cut(route[i+1:i+j], ":")
		b.WriteString(route[:i] + "{" + name + "}")
		route = route[i+j+1:]
	}
	return b.String()
}

// CheckRoutes walks router and compares its routes with the operations
// documented for listener. A route registered for every method (Handle,
// Mount) needs at least one documented method. The error lists exactly
// the routes missing from the description and the documented operations
// no route serves, one per line.
func (d *Doc) CheckRoutes(router chi.Routes, listener string) error {
	routed := map[string]map[string]bool{} // path -> methods
	err := chi.Walk(router, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		p := PathOf(route)
		if routed[p] == nil {
			routed[p] = map[string]bool{}
		}
		routed[p][method] = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk routes: %w", err)
	}
	docd := d.Operations(listener)
	docPaths := map[string]bool{}
	for op := range docd {
		_, p, _ := strings.Cut(op, " ")
		docPaths[p] = true
	}
	var missing, extra []string
	for p, ms := range routed {
		anyMethod := len(ms) >= 9 // chi registers Handle for all its 9 methods
		if anyMethod {
			if !docPaths[p] {
				missing = append(missing, "GET "+p+" (any method)")
			}
			continue
		}
		for m := range ms {
			if !docd[m+" "+p] {
				missing = append(missing, m+" "+p)
			}
		}
	}
	for op := range docd {
		m, p, _ := strings.Cut(op, " ")
		if !routed[p][m] && len(routed[p]) < 9 {
			extra = append(extra, op)
		}
	}
	if len(missing)+len(extra) == 0 {
		return nil
	}
	sort.Strings(missing)
	sort.Strings(extra)
	var b strings.Builder
	if len(missing) > 0 {
		fmt.Fprintf(&b, "%d %s route(s) not in %s (add them under \"paths\", with \"x-lpmos-listener\": %q for the agent API):\n", len(missing), listener, File, Agent)
		for _, s := range missing {
			b.WriteString("  " + s + "\n")
		}
	}
	if len(extra) > 0 {
		fmt.Fprintf(&b, "%d operation(s) in %s that no %s route serves (remove them, or route them):\n", len(extra), File, listener)
		for _, s := range extra {
			b.WriteString("  " + s + "\n")
		}
	}
	return fmt.Errorf("%s", b.String())
}

// ValidateResponse checks a response of the operation method+path (the
// OpenAPI path, e.g. /api/v1/tasks/{id}): its status must be documented
// and a JSON body must match the documented schema.
func (d *Doc) ValidateResponse(method, path string, status int, contentType string, body []byte) error {
	item, ok := d.Paths[path]
	if !ok {
		return fmt.Errorf("%s is not documented", path)
	}
	rawOp, ok := item[strings.ToLower(method)]
	if !ok {
		return fmt.Errorf("%s %s is not documented", method, path)
	}
	var op struct {
		Responses map[string]struct {
			Ref     string `json:"$ref"`
			Content map[string]struct {
				Schema any `json:"schema"`
			} `json:"content"`
		} `json:"responses"`
	}
	if err := json.Unmarshal(rawOp, &op); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	resp, ok := op.Responses[fmt.Sprint(status)]
	if !ok {
		return fmt.Errorf("%s %s answered %d, which is not documented", method, path, status)
	}
	var schema any
	if resp.Ref != "" { // #/components/responses/Error: JSON {"error"}
		schema = map[string]any{"$ref": "#/components/schemas/Error"}
	} else {
		media, ok := resp.Content["application/json"]
		if !ok {
			return nil // not JSON: nothing to check but the status
		}
		schema = media.Schema
	}
	if !strings.HasPrefix(contentType, "application/json") {
		return fmt.Errorf("%s %s %d: Content-Type %q, documented application/json", method, path, status, contentType)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%s %s %d: body is not JSON: %w", method, path, status, err)
	}
	if err := d.check(schema, v, "$"); err != nil {
		return fmt.Errorf("%s %s %d: %w", method, path, status, err)
	}
	return nil
}

// check validates v against schema: $ref, allOf, type (a name or a list,
// as 3.1 writes nullable), enum, required, properties,
// additionalProperties, items, minLength, minimum, maximum and format
// date-time. Unknown keywords are ignored.
func (d *Doc) check(schema, v any, at string) error {
	s, ok := schema.(map[string]any)
	if !ok {
		return nil
	}
	if ref, ok := s["$ref"].(string); ok {
		name, found := strings.CutPrefix(ref, "#/components/schemas/")
		target, ok := d.schemas[name]
		if !found || !ok {
			return fmt.Errorf("%s: unresolved $ref %q", at, ref)
		}
		return d.check(target, v, at)
	}
	if all, ok := s["allOf"].([]any); ok {
		for _, sub := range all {
			if err := d.check(sub, v, at); err != nil {
				return err
			}
		}
	}
	if t, ok := s["type"]; ok {
		var types []string
		switch t := t.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, x := range t {
				types = append(types, fmt.Sprint(x))
			}
		}
		okType := false
		for _, tn := range types {
			if typeOK(tn, v) {
				okType = true
			}
		}
		if !okType {
			return fmt.Errorf("%s: %s, want %s", at, jsonType(v), strings.Join(types, " or "))
		}
	}
	if enum, ok := s["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			if fmt.Sprint(e) == fmt.Sprint(v) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s: %v is not one of %v", at, v, enum)
		}
	}
	switch v := v.(type) {
	case map[string]any:
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, ok := v[fmt.Sprint(r)]; !ok {
					return fmt.Errorf("%s: required property %q is missing", at, r)
				}
			}
		}
		props, _ := s["properties"].(map[string]any)
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if ps, ok := props[k]; ok {
				if err := d.check(ps, v[k], at+"."+k); err != nil {
					return err
				}
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					return fmt.Errorf("%s: property %q is not documented", at, k)
				}
			case map[string]any:
				if err := d.check(ap, v[k], at+"."+k); err != nil {
					return err
				}
			}
		}
	case []any:
		if items, ok := s["items"]; ok {
			for i, x := range v {
				if err := d.check(items, x, fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	case string:
		if n, ok := s["minLength"].(float64); ok && float64(len(v)) < n {
			return fmt.Errorf("%s: %q is shorter than %v", at, v, n)
		}
		if s["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
				return fmt.Errorf("%s: %q is not an RFC 3339 date-time", at, v)
			}
		}
	case float64:
		if n, ok := s["minimum"].(float64); ok && v < n {
			return fmt.Errorf("%s: %v is below %v", at, v, n)
		}
		if n, ok := s["maximum"].(float64); ok && v > n {
			return fmt.Errorf("%s: %v is above %v", at, v, n)
		}
	}
	return nil
}

func typeOK(t string, v any) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == float64(int64(f))
	case "null":
		return v == nil
	}
	return false
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64:
		if v == float64(int64(v)) {
			return "integer"
		}
		return "number"
	}
	return fmt.Sprintf("%T", v)
}
