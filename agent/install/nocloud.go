package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/lpmos/lpmos/agent/wire"
)

// NoCloudDir is where cloud-init's NoCloud datasource looks for a seed in
// the installed root file system.
const NoCloudDir = "var/lib/cloud/seed/nocloud"

// yamlString quotes s for YAML: a JSON string is a valid YAML
// double-quoted scalar, which keeps hostnames and keys with ':' or '#' safe.
func yamlString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

// NoCloudMetaData renders meta-data: the task id as instance-id (a new task
// is a new instance, so cloud-init runs again after a reinstall), the
// hostname, and the SSH keys (NoCloud reads public-keys from meta-data,
// which keeps them working when the operator supplies their own user-data).
func NoCloudMetaData(taskID string, spec wire.InstallSpec) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "instance-id: %s\n", yamlString(taskID))
	if spec.Hostname != "" {
		fmt.Fprintf(&b, "local-hostname: %s\n", yamlString(spec.Hostname))
	}
	if len(spec.SSHAuthorizedKeys) > 0 {
		b.WriteString("public-keys:\n")
		for _, k := range spec.SSHAuthorizedKeys {
			fmt.Fprintf(&b, "  - %s\n", yamlString(k))
		}
	}
	return []byte(b.String())
}

// NoCloudUserData is the task's user_data verbatim, or a #cloud-config that
// sets the hostname and authorized keys when the task has none.
func NoCloudUserData(spec wire.InstallSpec) []byte {
	if spec.UserData != "" {
		return []byte(spec.UserData)
	}
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	if spec.Hostname != "" {
		fmt.Fprintf(&b, "hostname: %s\n", yamlString(spec.Hostname))
		b.WriteString("preserve_hostname: false\n")
	}
	if len(spec.SSHAuthorizedKeys) > 0 {
		b.WriteString("ssh_authorized_keys:\n")
		for _, k := range spec.SSHAuthorizedKeys {
			fmt.Fprintf(&b, "  - %s\n", yamlString(k))
		}
	}
	return []byte(b.String())
}

// NetworkInterfaceName is the name the installed system's configured NIC
// gets (set-name): the network-config matches the NIC by MAC, and the
// kernel's name for it in the installed OS is not known to the agent.
const NetworkInterfaceName = "lpmos0"

// NoCloudNetworkConfig renders the task's static address as a NoCloud
// network-config in network config version 1: cloud-init 22.4 of Debian 12
// renders it cleanly for ifupdown (its version 2 path writes a stray "dns"
// line there), and for netplan, networkd or NetworkManager elsewhere. The
// NIC is matched by MAC and named NetworkInterfaceName. nil when the task
// has no address.
func NoCloudNetworkConfig(spec wire.InstallSpec) []byte {
	n := spec.Network
	if n == nil || n.Address == "" {
		return nil
	}
	subnet := "static"
	if strings.Contains(n.Address, ":") {
		subnet = "static6"
	}
	var b strings.Builder
	b.WriteString("# written by lpmos from the task's network field\n")
	b.WriteString("version: 1\nconfig:\n")
	b.WriteString("  - type: physical\n")
	fmt.Fprintf(&b, "    name: %s\n", NetworkInterfaceName)
	if n.MAC != "" {
		fmt.Fprintf(&b, "    mac_address: %s\n", yamlString(strings.ToLower(n.MAC)))
	}
	b.WriteString("    subnets:\n")
	fmt.Fprintf(&b, "      - type: %s\n", subnet)
	fmt.Fprintf(&b, "        address: %s\n", yamlString(n.Address))
	if n.Gateway != "" {
		fmt.Fprintf(&b, "        gateway: %s\n", yamlString(n.Gateway))
	}
	if len(n.DNS) > 0 {
		b.WriteString("        dns_nameservers:\n")
		for _, d := range n.DNS {
			fmt.Fprintf(&b, "          - %s\n", yamlString(d))
		}
	}
	return []byte(b.String())
}

// writeSeed writes meta-data and user-data under root/NoCloudDir.
// user-data may hold secrets: it is readable by root only.
func writeSeed(root, taskID string, spec wire.InstallSpec) error {
	dir := filepath.Join(root, NoCloudDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("nocloud seed: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"meta-data", NoCloudMetaData(taskID, spec), 0o644},
		{"user-data", NoCloudUserData(spec), 0o600},
		{"network-config", NoCloudNetworkConfig(spec), 0o644},
	} {
		if f.data == nil {
			continue // no network-config: the installed OS uses DHCP
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("nocloud seed: %w", err)
		}
	}
	return nil
}

// mountRoot mounts the installed root file system. ext4 is what the images
// use; xfs and btrfs are tried so RHEL-family and SUSE images work too.
func mountRoot(dev, dir string) (string, error) {
	var errs []error
	for _, fstype := range []string{"ext4", "xfs", "btrfs"} {
		err := syscall.Mount(dev, dir, fstype, 0, "")
		if err == nil {
			return fstype, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", fstype, err))
	}
	return "", fmt.Errorf("mounting %s: %w", dev, errors.Join(errs...))
}
