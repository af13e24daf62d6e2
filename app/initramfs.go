package app

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/lpmos/lpmos/pxe/agentbin"
	"github.com/lpmos/lpmos/pxe/initramfs"
	"github.com/spf13/cobra"
)

// initramfsOptions are the flags of `lpmos initramfs build`.
type initramfsOptions struct {
	kernel       string
	release      string
	modulesDir   string
	kernelConfig string
	modules      []string
	extraModules []string
	arch         string
	agent        string
	caFile       string
	output       string
}

func newInitramfsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "initramfs",
		Short: "Build the agent's initramfs",
	}
	cmd.AddCommand(newInitramfsBuildCmd())
	return cmd
}

func newInitramfsBuildCmd() *cobra.Command {
	o := &initramfsOptions{}
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the agent's initramfs (agent as /init plus the kernel modules it needs)",
		Long: `Build the initramfs lpmos boots machines into: a gzipped newc cpio archive with
the agent (carried inside lpmos) as /init, and the kernel modules it needs:
virtio, common server NICs and disk controllers, resolved with their
dependencies from modules.dep (or, for a kernel unpacked with dpkg-deb -x and
no depmod run, from the modules themselves) in load order.

The modules must belong to the kernel the region serves (--kernel in serve).`,
		Example: `  lpmos initramfs build --kernel-release 6.1.0-26-cloud-amd64 --modules-dir /lib/modules -o initramfs.img
  lpmos initramfs build --kernel k/boot/vmlinuz-6.1.0-26-cloud-amd64 --modules-dir k/lib/modules -o boot/initramfs.img`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := o.build(func(msg string) { fmt.Fprintln(cmd.ErrOrStderr(), "warning:", msg) })
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if res.Release == "" {
				fmt.Fprintf(out, "%s: %d bytes, agent only (no modules)\n", o.output, res.Size)
				return nil
			}
			fmt.Fprintf(out, "%s: %d bytes, kernel %s, %d modules (dependencies from %s)\n", o.output, res.Size, res.Release, len(res.Modules), res.Index)
			for _, m := range res.Modules {
				fmt.Fprintln(out, "  "+m)
			}
			if len(res.Builtin) > 0 {
				fmt.Fprintf(out, "built in: %s\n", strings.Join(res.Builtin, " "))
			}
			if len(res.Missing) > 0 {
				fmt.Fprintf(out, "not in this kernel: %s\n", strings.Join(res.Missing, " "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "initramfs.img", "file to write")
	f.StringVar(&o.kernel, "kernel", "", "kernel image (bzImage): its release is used when --kernel-release is not given")
	f.StringVar(&o.release, "kernel-release", "", "kernel release (uname -r) whose modules to take (default: from --kernel, or the only one in --modules-dir)")
	f.StringVar(&o.modulesDir, "modules-dir", "", "kernel module tree: the directory holding <release>/ (like /lib/modules); empty: no modules")
	f.StringVar(&o.kernelConfig, "kernel-config", "", "kernel config file, to allow xz/zstd modules (default: <modules-dir>/../../boot/config-<release> when it exists)")
	f.StringSliceVar(&o.modules, "modules", nil, "modules to include instead of the default list ("+strings.Join(initramfs.DefaultModules[:4], ",")+",...)")
	f.StringSliceVar(&o.extraModules, "extra-modules", nil, "modules to include besides the default list")
	f.StringVar(&o.arch, "arch", runtime.GOARCH, "architecture of the embedded agent: "+strings.Join(agentbin.Arches(), " or "))
	f.StringVar(&o.agent, "agent", "", "agent executable to use instead of the embedded one")
	f.StringVar(&o.caFile, "ca-file", "", "PEM CA bundle for an https agent API (installed as "+initramfs.CAPath+")")
	return cmd
}

// build resolves the options and writes the initramfs.
func (o *initramfsOptions) build(warn func(string)) (initramfs.Result, error) {
	opts, err := o.resolve()
	if err != nil {
		return initramfs.Result{}, err
	}
	opts.Warn = warn
	if o.output == "" {
		return initramfs.Result{}, fmt.Errorf("--output: want a file name")
	}
	if err := os.MkdirAll(filepath.Dir(o.output), 0o755); err != nil {
		return initramfs.Result{}, fmt.Errorf("output dir: %w", err)
	}
	res, err := initramfs.BuildFile(o.output, opts)
	if err != nil {
		return res, fmt.Errorf("build initramfs %s: %w", o.output, err)
	}
	return res, nil
}

func (o *initramfsOptions) resolve() (initramfs.Options, error) {
	var opts initramfs.Options
	var err error
	if o.agent != "" {
		if opts.Agent, err = os.ReadFile(o.agent); err != nil {
			return opts, fmt.Errorf("--agent: %w", err)
		}
	} else if opts.Agent, err = agentbin.Binary(o.arch); err != nil {
		return opts, fmt.Errorf("--arch: %w", err)
	}
	opts.Release = o.release
	if opts.Release == "" && o.kernel != "" {
		if opts.Release, err = initramfs.KernelRelease(o.kernel); err != nil {
			return opts, fmt.Errorf("--kernel: %w (give --kernel-release)", err)
		}
	}
	opts.ModulesDir = o.modulesDir
	if o.modules != nil {
		opts.Modules = append([]string(nil), o.modules...)
	} else if len(o.extraModules) > 0 {
		opts.Modules = append(append([]string(nil), initramfs.DefaultModules...), o.extraModules...)
	}
	opts.KernelConfig = o.kernelConfig
	if opts.KernelConfig == "" && o.modulesDir != "" {
		if _, rel, err := initramfs.FindRelease(o.modulesDir, opts.Release); err == nil {
			guess := filepath.Join(o.modulesDir, "..", "..", "boot", "config-"+rel)
			if _, err := os.Stat(guess); err == nil {
				opts.KernelConfig = guess
			}
		}
	}
	opts.CAFile = o.caFile
	return opts, nil
}

// ensureInitramfs builds <boot-dir>/<initrd> for the region when it is
// missing and the kernel and its modules are given (--kernel-modules-dir).
func ensureInitramfs(bootDir string, ro regionalOptions, log *slog.Logger) error {
	initrd := filepath.Join(bootDir, ro.initrd)
	if _, err := os.Stat(initrd); err == nil {
		return nil
	}
	kernel := filepath.Join(bootDir, ro.kernel)
	if _, err := os.Stat(kernel); err != nil {
		log.Warn("no agent kernel in the boot dir: machines cannot boot the agent until it is there", "kernel", kernel)
		return nil
	}
	if ro.kernelModules == "" {
		log.Warn("no initramfs in the boot dir: build it with `lpmos initramfs build`, or give --kernel-modules-dir to build it at start", "initrd", initrd)
		return nil
	}
	o := initramfsOptions{kernel: kernel, release: ro.kernelRelease, modulesDir: ro.kernelModules, arch: "amd64", output: initrd}
	res, err := o.build(func(msg string) { log.Warn("initramfs: " + msg) })
	if err != nil {
		return fmt.Errorf("%w (or build it by hand: lpmos initramfs build)", err)
	}
	log.Info("built the agent initramfs", "path", initrd, "kernel_release", res.Release, "modules", len(res.Modules), "bytes", res.Size)
	return nil
}
