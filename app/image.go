package app

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"time"

	"github.com/lpmos/lpmos/internal/imagesrc"
	"github.com/lpmos/lpmos/store"
	"github.com/spf13/cobra"
)

func newImageCmd() *cobra.Command {
	o := &clientOptions{}
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the OS image catalog",
	}
	o.addFlags(cmd)
	cmd.AddCommand(newImageAddCmd(o), newImageListCmd(o), newImageRmCmd(o))
	return cmd
}

func newImageAddCmd(o *clientOptions) *cobra.Command {
	var (
		sum     string
		size    int64
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "add OS VERSION FILE-OR-URL",
		Short: "Add a disk image (raw, gzip, xz, zstd or qcow2) to the catalog",
		Long: `Add a disk image to the catalog. The server reads the source once: it tells
the format from the file's first bytes (raw, gzip, xz, zstd, qcow2; VMDK,
VHD(X), VDI, ISO, zip, bzip2... are refused with what to do), checks that a
compressed stream is intact, and records the size and sha256 of the disk
bytes (what the agent writes). xz and zstd are decompressed by the region
while it serves them; qcow2 is converted once with qemu-img (package
qemu-utils) into a gzip file kept in <images-dir>/.lpmos-derived.

A local file must lie under the server's images directory (lpmos serve
--images-dir, default <data-dir>/images) and stay there: the region serves
it from that path. A URL must be http(s) and not point at loopback or
link-local addresses (unless serve runs with --allow-local-image-urls).
With --sha256 and/or --size the server checks the image against them.`,
		Example: "  lpmos image add ubuntu 24.04 /var/lib/lpmos/images/ubuntu-24.04.qcow2\n  lpmos image add debian 12 https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.raw",
		Args:    cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			src := args[2]
			if !imagesrc.IsURL(src) {
				if src, err = filepath.Abs(src); err != nil {
					return fmt.Errorf("image path %q: %w", args[2], err)
				}
			}
			img := store.Image{OSType: args[0], OSVersion: args[1], Source: src, SHA256: sum, Size: size}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var got store.Image
			if err := c.do(ctx, "POST", "/api/v1/images", img, &got); err != nil {
				return fmt.Errorf("add image: %w", err)
			}
			return printImages(cmd.OutOrStdout(), o.output, got)
		},
	}
	cmd.Flags().StringVar(&sum, "sha256", "", "expected sha256 of the disk bytes (after decompression/conversion); refused if it differs")
	cmd.Flags().Int64Var(&size, "size", 0, "expected size in bytes of the disk bytes; refused if it differs")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "how long the server may take to read (and convert) the image")
	return cmd
}

func newImageRmCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "rm OS VERSION",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove an image from the catalog",
		Long: `Remove an image from the catalog. Refused while an active task installs it
(cancel the task or wait for it to end). The converted file of a qcow2 image
is deleted; the source file is left where it is.`,
		Example: "  lpmos image rm ubuntu 22.04",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var got store.Image
			if err := c.do(cmd.Context(), "DELETE", "/api/v1/images/"+url.PathEscape(args[0])+"/"+url.PathEscape(args[1]), nil, &got); err != nil {
				return fmt.Errorf("remove image: %w", err)
			}
			if structured(o.output) {
				return printData(cmd.OutOrStdout(), o.output, got)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "removed %s %s (%s)\n", got.OSType, got.OSVersion, got.Source)
			return err
		},
	}
}

func newImageListCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the image catalog",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			var imgs []store.Image
			if err := c.do(cmd.Context(), "GET", "/api/v1/images", nil, &imgs); err != nil {
				return fmt.Errorf("list images: %w", err)
			}
			if structured(o.output) { // a list, even of one image
				return printData(cmd.OutOrStdout(), o.output, imgs)
			}
			return printImages(cmd.OutOrStdout(), o.output, imgs...)
		},
	}
}

func printImages(w io.Writer, output string, imgs ...store.Image) error {
	if structured(output) {
		if len(imgs) == 1 {
			return printData(w, output, imgs[0])
		}
		return printData(w, output, imgs)
	}
	if output == "name" {
		names := make([]string, 0, len(imgs))
		for _, i := range imgs {
			names = append(names, i.OSType+"/"+i.OSVersion)
		}
		return printNames(w, names)
	}
	// wide: the whole sha256 (to compare with a published checksum), the
	// file's size, when it was added and the derived file served instead.
	tw := tableWriter(w) // app/output_lists.go
	row(tw, output, []string{"OS", "VERSION", "FORMAT", "SERVED", "SIZE", "SHA256", "SOURCE"}, "FILE SIZE", "ADDED", "DERIVED")
	for _, i := range imgs {
		sum := i.SHA256
		if output != "wide" && len(sum) > 12 {
			sum = sum[:12]
		}
		row(tw, output, []string{i.OSType, i.OSVersion, i.Format, i.Served(), fmt.Sprint(i.Size), sum, i.Source},
			fmt.Sprint(i.FileSize), localTime(i.AddedAt), dash(i.Derived))
	}
	return flush(tw)
}
