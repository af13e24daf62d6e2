package pxe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
)

// Paths served by BootHandler.
const (
	bootPrefix     = "/boot/"
	ipxeHTTPPrefix = "/boot/ipxe/"  // + an embedded iPXE binary (UEFI HTTP boot)
	filesPrefix    = "/boot/files/" // + a file of BootDir (kernel, initramfs)
	scriptSuffix   = ".ipxe"
)

// ScriptPath is the path of mac's iPXE script: /boot/<mac>.ipxe.
func ScriptPath(mac net.HardwareAddr) string {
	return bootPrefix + mac.String() + scriptSuffix
}

// FilePath is the path under which BootHandler serves BootDir's file name.
func FilePath(name string) string {
	return filesPrefix + name
}

// Decider tells what a MAC boots.
type Decider interface {
	// Decide returns the decision for mac. Return an error wrapping
	// ErrUnknownMachine for a MAC lpmos does not boot (answered 404).
	Decide(ctx context.Context, mac net.HardwareAddr) (Decision, error)
}

// DeciderFunc adapts a function to Decider.
type DeciderFunc func(ctx context.Context, mac net.HardwareAddr) (Decision, error)

// Decide implements Decider.
func (f DeciderFunc) Decide(ctx context.Context, mac net.HardwareAddr) (Decision, error) {
	return f(ctx, mac)
}

// ErrUnknownMachine is what a Decider wraps for a MAC lpmos does not boot.
var ErrUnknownMachine = errors.New("unknown machine")

// BootConfig configures BootHandler.
type BootConfig struct {
	// Decider decides each MAC's script. Required.
	Decider Decider
	// AgentURL is the regional agent API base URL given to the agent
	// (lpmos_client=). Required.
	AgentURL string
	// BaseURL is where clients reach this handler, e.g.
	// http://10.0.0.1:8081; kernel and initrd URLs are built from it.
	// Required.
	BaseURL string
	// BootDir holds the agent's kernel and initramfs, served under
	// /boot/files/ (Range requests supported, no listing). Required.
	BootDir string
	// Kernel and Initrd are file names inside BootDir; default "vmlinuz"
	// and "initramfs.cpio.gz".
	Kernel string
	Initrd string
	// ExtraArgs are appended to the agent's kernel command line.
	ExtraArgs []string
	// SerialConsole is the agent's serial console (console=<value>);
	// default DefaultSerialConsole.
	SerialConsole string
	// IPXEFiles is served under /boot/ipxe/ for UEFI HTTP boot clients;
	// default IPXEFiles().
	IPXEFiles fs.FS
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// CAPin is the hex sha256 of the CA the agent pins for AgentURL
	// (https); empty: no lpmos_ca on the kernel line.
	CAPin string
}

type bootHandler struct {
	cfg BootConfig
	log *slog.Logger
	mux *http.ServeMux
}

// NewBootHandler returns the boot HTTP handler. Mount it at the root of the
// regional HTTP server (it only answers under /boot/):
//
//	GET /boot/{mac}.ipxe       the iPXE script (Decider + RenderScript)
//	GET /boot/files/{name...}  kernel and initramfs from BootDir
//	GET /boot/ipxe/{name}      the embedded iPXE binaries (UEFI HTTP boot)
func NewBootHandler(cfg BootConfig) (http.Handler, error) {
	if cfg.Decider == nil {
		return nil, errors.New("boot handler: Decider is required")
	}
	if err := checkURL("agent URL", cfg.AgentURL); err != nil {
		return nil, fmt.Errorf("boot handler: %w", err)
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if err := checkURL("base URL", cfg.BaseURL); err != nil {
		return nil, fmt.Errorf("boot handler: %w", err)
	}
	if cfg.BootDir == "" {
		return nil, errors.New("boot handler: BootDir is required")
	}
	if cfg.Kernel == "" {
		cfg.Kernel = "vmlinuz"
	}
	if cfg.Initrd == "" {
		cfg.Initrd = "initramfs.cpio.gz"
	}
	for _, n := range []string{cfg.Kernel, cfg.Initrd} {
		if !fs.ValidPath(n) || n == "." {
			return nil, fmt.Errorf("boot handler: %q is not a file name inside BootDir", n)
		}
	}
	if cfg.IPXEFiles == nil {
		cfg.IPXEFiles = IPXEFiles()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &bootHandler{cfg: cfg, log: cfg.Logger.With("service", "boot-http"), mux: http.NewServeMux()}
	// Check that a rendered script is valid now rather than on the first boot.
	if _, err := h.script(Decision{Action: ActionDiscover}); err != nil {
		return nil, fmt.Errorf("boot handler: %w", err)
	}
	h.mux.HandleFunc("GET "+bootPrefix+"{script}", h.serveScript)
	h.mux.HandleFunc("GET "+filesPrefix+"{name...}", h.serveFile)
	h.mux.HandleFunc("GET "+ipxeHTTPPrefix+"{name}", h.serveIPXE)
	return h, nil
}

func (h *bootHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

func (h *bootHandler) script(d Decision) (string, error) {
	return RenderScript(Script{
		Decision:  d,
		AgentURL:  h.cfg.AgentURL,
		KernelURL: h.cfg.BaseURL + FilePath(h.cfg.Kernel),
		InitrdURL: h.cfg.BaseURL + FilePath(h.cfg.Initrd),
		ExtraArgs: h.cfg.ExtraArgs,
		CAPin:     h.cfg.CAPin,

		SerialConsole: h.cfg.SerialConsole,
	})
}

func (h *bootHandler) serveScript(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("script")
	macStr, ok := strings.CutSuffix(name, scriptSuffix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	mac, err := net.ParseMAC(macStr)
	if err != nil || len(mac) != 6 {
		http.Error(w, "bad MAC address", http.StatusBadRequest)
		return
	}
	log := h.log.With("mac", mac.String(), "remote", r.RemoteAddr)
	d, err := h.cfg.Decider.Decide(r.Context(), mac)
	if errors.Is(err, ErrUnknownMachine) {
		log.InfoContext(r.Context(), "boot script: unknown machine")
		http.Error(w, "unknown machine", http.StatusNotFound)
		return
	}
	if err != nil {
		log.ErrorContext(r.Context(), "boot script: decide", "err", err)
		http.Error(w, "cannot decide what to boot", http.StatusInternalServerError)
		return
	}
	body, err := h.script(d)
	if err != nil {
		log.ErrorContext(r.Context(), "boot script: render", "action", string(d.Action), "err", err)
		http.Error(w, "cannot render boot script", http.StatusInternalServerError)
		return
	}
	log.InfoContext(r.Context(), "boot script served", "action", string(d.Action), "task", d.TaskID)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, body)
}

// serveFile serves a regular file of BootDir. os.OpenInRoot refuses any path
// (or symlink) that leaves BootDir; directories are not listed.
func (h *bootHandler) serveFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !fs.ValidPath(name) || name == "." {
		http.NotFound(w, r)
		return
	}
	f, err := os.OpenInRoot(h.cfg.BootDir, name)
	if err != nil {
		h.log.InfoContext(r.Context(), "boot file not served", "name", name, "err", err)
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, path.Base(name), st.ModTime(), f)
}

func (h *bootHandler) serveIPXE(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !isBootBinary(name) || !hasFile(h.cfg.IPXEFiles, name) {
		http.NotFound(w, r)
		return
	}
	f, err := h.cfg.IPXEFiles.Open(name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	rs, ok := f.(io.ReadSeeker)
	if err != nil || !ok {
		http.Error(w, "cannot read iPXE binary", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/efi")
	http.ServeContent(w, r, name, st.ModTime(), rs)
}
