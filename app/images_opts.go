package app

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/spf13/cobra"
)

// imageOptions are the image catalog flags of `lpmos serve`.
type imageOptions struct {
	dir            string
	allowLocalURLs bool
	qemuImg        string
}

func (o *imageOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.dir, "images-dir", "", "directory local image sources must lie in (symlinks resolved); converted qcow2 images are kept in its .lpmos-derived (default <data-dir>/images)")
	f.BoolVar(&o.allowLocalURLs, "allow-local-image-urls", false, "allow image URLs on loopback, link-local, unspecified and multicast addresses (refused by default: cloud metadata, this host's services)")
	f.StringVar(&o.qemuImg, "qemu-img", "qemu-img", "qemu-img program that converts qcow2 images (package qemu-utils)")
}

// imagePolicy creates the images directory (0755) and returns the rules
// image sources are checked against, with this node's listen ports.
func (o serveOptions) imagePolicy() (imagesrc.Policy, error) {
	dir := o.images.dir
	if dir == "" {
		dir = filepath.Join(o.dataDir, "images")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return imagesrc.Policy{}, fmt.Errorf("--images-dir %s: %w", o.images.dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return imagesrc.Policy{}, fmt.Errorf("create images dir %s: %w", dir, err)
	}
	ports := []int{o.apiPort}
	if _, p, err := net.SplitHostPort(o.listenAddr); err == nil {
		if n, err := strconv.Atoi(p); err == nil {
			ports = append(ports, n)
		}
	}
	for _, raw := range []string{o.etcdClientURL, o.etcdPeerURL} {
		if u, err := url.Parse(raw); err == nil {
			if n, err := strconv.Atoi(u.Port()); err == nil {
				ports = append(ports, n)
			}
		}
	}
	return imagesrc.Policy{Dir: dir, AllowLocalURLs: o.images.allowLocalURLs, OwnPorts: ports, QemuImg: o.images.qemuImg}, nil
}
