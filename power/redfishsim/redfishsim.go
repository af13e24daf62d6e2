// Package redfishsim is a Redfish service for tests, shaped like a real
// BMC's (DMTF schema names and @odata links, as iDRAC/iLO/OpenBMC serve
// them), with its error answers. Serve it with net/http/httptest.
package redfishsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Server is a Redfish service shaped like a real BMC's (DMTF schema
// names and @odata links, as iDRAC/iLO/OpenBMC serve them): a ServiceRoot,
// a SessionService, a Systems collection, ComputerSystems with PowerState,
// Boot override fields and the #ComputerSystem.Reset action with its
// allowable values. It records every action it performed.
type Server struct {
	User, Pass string
	Systems    []string // system ids
	ResetTypes []string // ResetType@Redfish.AllowableValues
	BootAllow  []string // BootSourceOverrideTarget@Redfish.AllowableValues
	BasicOnly  bool     // no SessionService (basic auth only)
	RefuseBoot bool     // lists Pxe as allowed yet refuses it (seen on real BMCs)

	// PowerOf and BootOf are each system's state (set them before serving;
	// read them with Power).
	PowerOf map[string]string
	BootOf  map[string][2]string // target, enabled

	mu      sync.Mutex
	actions []string
	tokens  map[string]bool
}

// New returns a service with one system, System.Embedded.1, user admin,
// password s3cret-pw.
func New() *Server {
	return &Server{
		User: "admin", Pass: "s3cret-pw", Systems: []string{"System.Embedded.1"},
		ResetTypes: []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle", "Nmi"},
		BootAllow:  []string{"None", "Pxe", "Hdd", "Cd", "BiosSetup"},
		PowerOf:    map[string]string{}, BootOf: map[string][2]string{}, tokens: map[string]bool{},
	}
}

// Power returns a system's power state ("Off" until powered).
func (f *Server) Power(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.PowerOf[id] == "" {
		return "Off"
	}
	return f.PowerOf[id]
}

// Sessions counts the open Redfish sessions.
func (f *Server) Sessions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.tokens)
}

func rfError(w http.ResponseWriter, code int, id, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": "Base.1.8.GeneralError", "message": "A general error has occurred. See ExtendedInfo for more information.",
		"@Message.ExtendedInfo": []map[string]any{{"MessageId": id, "Message": msg, "Severity": "Critical"}},
	}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *Server) authed(r *http.Request) bool {
	if u, p, ok := r.BasicAuth(); ok {
		return u == f.User && p == f.Pass
	}
	return f.tokens[r.Header.Get("X-Auth-Token")]
}

func (f *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := strings.TrimSuffix(r.URL.Path, "/")
	const sys = "/redfish/v1/Systems/"
	switch {
	case r.Method == http.MethodGet && p == "/redfish/v1":
		root := map[string]any{
			"@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_11_0.ServiceRoot",
			"Id": "RootService", "Name": "Root Service", "RedfishVersion": "1.15.0",
			"Systems": map[string]string{"@odata.id": "/redfish/v1/Systems"},
		}
		if !f.BasicOnly {
			root["SessionService"] = map[string]string{"@odata.id": "/redfish/v1/SessionService"}
			root["Links"] = map[string]any{"Sessions": map[string]string{"@odata.id": "/redfish/v1/SessionService/Sessions"}}
		}
		writeJSON(w, root)
		return
	case r.Method == http.MethodPost && p == "/redfish/v1/SessionService/Sessions" && !f.BasicOnly:
		var body struct{ UserName, Password string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		if body.UserName != f.User || body.Password != f.Pass {
			rfError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "There is no valid session established with the implementation.")
			return
		}
		tok := fmt.Sprintf("tok-%d", len(f.tokens)+1)
		f.tokens[tok] = true
		w.Header().Set("X-Auth-Token", tok)
		w.Header().Set("Location", "/redfish/v1/SessionService/Sessions/"+tok)
		w.WriteHeader(http.StatusCreated)
		writeJSON(w, map[string]any{"@odata.id": "/redfish/v1/SessionService/Sessions/" + tok, "Id": tok, "UserName": body.UserName})
		return
	}
	if !f.authed(r) {
		rfError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "There is no valid session established with the implementation.")
		return
	}
	switch {
	case r.Method == http.MethodDelete && strings.HasPrefix(p, "/redfish/v1/SessionService/Sessions/"):
		delete(f.tokens, p[strings.LastIndex(p, "/")+1:])
		f.actions = append(f.actions, "logout")
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && p == "/redfish/v1/Systems":
		var members []map[string]string
		for _, id := range f.Systems {
			members = append(members, map[string]string{"@odata.id": sys + id})
		}
		writeJSON(w, map[string]any{
			"@odata.id": "/redfish/v1/Systems", "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
			"Name": "Computer System Collection", "Members": members, "Members@odata.count": len(members),
		})
	case strings.HasPrefix(p, sys):
		rest := strings.TrimPrefix(p, sys)
		id, action, _ := strings.Cut(rest, "/")
		if !slices.Contains(f.Systems, id) {
			rfError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "The resource at the URI "+r.URL.Path+" was not found.")
			return
		}
		f.serveSystem(w, r, id, action)
	default:
		rfError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "The resource at the URI "+r.URL.Path+" was not found.")
	}
}

func (f *Server) serveSystem(w http.ResponseWriter, r *http.Request, id, action string) {
	if f.PowerOf[id] == "" {
		f.PowerOf[id] = "Off"
	}
	switch {
	case r.Method == http.MethodGet && action == "":
		b := f.BootOf[id]
		if b[0] == "" {
			b = [2]string{"None", "Disabled"}
		}
		writeJSON(w, map[string]any{
			"@odata.id": "/redfish/v1/Systems/" + id, "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
			"@odata.etag": `W/"1"`,
			"Id":          id, "Name": "System", "SystemType": "Physical", "PowerState": f.PowerOf[id],
			"Boot": map[string]any{
				"BootSourceOverrideTarget": b[0], "BootSourceOverrideEnabled": b[1], "BootSourceOverrideMode": "UEFI",
				"BootSourceOverrideTarget@Redfish.AllowableValues": f.BootAllow,
			},
			"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
				"target":                            "/redfish/v1/Systems/" + id + "/Actions/ComputerSystem.Reset",
				"ResetType@Redfish.AllowableValues": f.ResetTypes,
			}},
		})
	case r.Method == http.MethodPost && action == "Actions/ComputerSystem.Reset":
		var body struct{ ResetType string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || !slices.Contains(f.ResetTypes, body.ResetType) {
			rfError(w, http.StatusBadRequest, "Base.1.8.ActionParameterValueNotInList",
				fmt.Sprintf("The value '%s' for the parameter ResetType is not in the list of acceptable values.", body.ResetType))
			return
		}
		switch body.ResetType {
		case "On", "ForceOn", "PowerCycle", "ForceRestart":
			f.PowerOf[id] = "On"
		case "ForceOff", "GracefulShutdown":
			f.PowerOf[id] = "Off"
		}
		f.actions = append(f.actions, id+" reset "+body.ResetType)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPatch && action == "":
		var body struct {
			Boot map[string]string
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Boot == nil {
			rfError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "The request body submitted was malformed JSON.")
			return
		}
		if len(body.Boot) != 2 {
			rfError(w, http.StatusBadRequest, "Base.1.8.PropertyNotWritable", fmt.Sprintf("PATCH carried %d Boot properties", len(body.Boot)))
			return
		}
		t, e := body.Boot["BootSourceOverrideTarget"], body.Boot["BootSourceOverrideEnabled"]
		if !slices.Contains(f.BootAllow, t) || f.RefuseBoot {
			rfError(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList",
				fmt.Sprintf("The value '%s' for the property BootSourceOverrideTarget is not in the list of acceptable values.", t))
			return
		}
		f.BootOf[id] = [2]string{t, e}
		f.actions = append(f.actions, id+" boot "+t+" "+e)
		w.WriteHeader(http.StatusNoContent)
	default:
		rfError(w, http.StatusMethodNotAllowed, "Base.1.8.OperationNotAllowed", "The operation is not allowed.")
	}
}

// Took lists the actions the service performed, in order (logouts aside).
func (f *Server) Took() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, a := range f.actions {
		if a != "logout" {
			out = append(out, a)
		}
	}
	return out
}
