package app

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

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
	cmd.AddCommand(newImageAddCmd(o), newImageListCmd(o))
	return cmd
}

func newImageAddCmd(o *clientOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "add OS VERSION FILE-OR-URL",
		Short: "Add a disk image (raw or gzip) to the catalog",
		Long: `Add a disk image to the catalog. The file is read once to record its size and
the sha256 of the disk bytes (after gunzip for .gz images). A local file must
stay where it is: the region serves it to its agents from that path.`,
		Example: "  lpmos image add ubuntu 22.04 /srv/images/ubuntu-22.04.raw.gz",
		Args:    cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			img, err := describeImage(cmd.Context(), args[2])
			if err != nil {
				return err
			}
			img.OSType, img.OSVersion = args[0], args[1]
			var got store.Image
			if err := c.do(cmd.Context(), "POST", "/api/v1/images", img, &got); err != nil {
				return fmt.Errorf("add image: %w", err)
			}
			return printImages(cmd.OutOrStdout(), o.output, got)
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
			return printImages(cmd.OutOrStdout(), o.output, imgs...)
		},
	}
}

// describeImage reads a local file or URL once and returns its catalog
// entry: format from the gzip magic, size and sha256 of the disk bytes.
func describeImage(ctx context.Context, src string) (store.Image, error) {
	var (
		rc  io.ReadCloser
		img store.Image
	)
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		req, err := http.NewRequestWithContext(ctx, "GET", src, nil)
		if err != nil {
			return img, fmt.Errorf("image URL %q: %w", src, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return img, fmt.Errorf("download %s: %w", src, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return img, fmt.Errorf("download %s: HTTP %d", src, resp.StatusCode)
		}
		rc, img.Source = resp.Body, src
	} else {
		abs, err := filepath.Abs(src)
		if err != nil {
			return img, fmt.Errorf("image path %q: %w", src, err)
		}
		f, err := os.Open(abs)
		if err != nil {
			return img, fmt.Errorf("open image: %w", err)
		}
		rc, img.Source = f, abs
	}
	defer rc.Close()
	counted := &countingReader{r: rc}
	br := bufio.NewReaderSize(counted, 1<<20)
	magic, _ := br.Peek(2)
	var disk io.Reader = br
	img.Format = "raw"
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return img, fmt.Errorf("read gzip image %s: %w", src, err)
		}
		defer zr.Close()
		disk, img.Format = zr, "gzip"
	}
	h := sha256.New()
	n, err := io.Copy(h, disk)
	if err != nil {
		return img, fmt.Errorf("read image %s: %w", src, err)
	}
	if n == 0 {
		return img, fmt.Errorf("image %s is empty", src)
	}
	img.Size, img.FileSize, img.SHA256 = n, counted.n, hex.EncodeToString(h.Sum(nil))
	return img, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func printImages(w io.Writer, output string, imgs ...store.Image) error {
	if output == "json" {
		if len(imgs) == 1 {
			return printJSON(w, imgs[0])
		}
		return printJSON(w, imgs)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OS\tVERSION\tFORMAT\tSIZE\tSHA256\tSOURCE")
	for _, i := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.12s\t%s\n", i.OSType, i.OSVersion, i.Format, i.Size, i.SHA256, i.Source)
	}
	return tw.Flush()
}
