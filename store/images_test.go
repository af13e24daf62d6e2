package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

func TestPutImageValidates(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx := context.Background()
	good := store.Image{OSType: "debian", OSVersion: "12", Source: "/srv/images/d.qcow2", Format: "qcow2", AgentFormat: "gzip",
		SHA256: strings.Repeat("ab", 32), Size: 1 << 20, FileSize: 4096, Derived: "/srv/images/.lpmos-derived/d.raw.gz"}
	if err := st.PutImage(ctx, good); err != nil {
		t.Fatalf("good entry: %v", err)
	}
	got, err := st.GetImage(ctx, "debian", "12")
	if err != nil || got.Served() != "gzip" || got.Derived != good.Derived {
		t.Fatalf("got %+v %v", got, err)
	}
	old := store.Image{OSType: "debian", OSVersion: "11", Source: "/x", Format: "gzip", SHA256: strings.Repeat("0", 64), Size: 1}
	if err := st.PutImage(ctx, old); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetImage(ctx, "debian", "11"); got.Served() != "gzip" {
		t.Errorf("an entry without agent_format serves %q", got.Served())
	}
	for name, mod := range map[string]func(*store.Image){
		"non-hex sha256":      func(i *store.Image) { i.SHA256 = strings.Repeat("zz", 32) },
		"short sha256":        func(i *store.Image) { i.SHA256 = "abcd" },
		"negative size":       func(i *store.Image) { i.Size = -5 },
		"zero size":           func(i *store.Image) { i.Size = 0 },
		"negative file size":  func(i *store.Image) { i.FileSize = -1 },
		"unknown format":      func(i *store.Image) { i.Format = "vmdk" },
		"agent gets xz":       func(i *store.Image) { i.AgentFormat = "xz" },
		"xz without agent fm": func(i *store.Image) { i.Format, i.AgentFormat = "xz", "" },
	} {
		img := good
		mod(&img)
		if err := st.PutImage(ctx, img); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestDeleteImage(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx := context.Background()
	img := store.Image{OSType: "ubuntu", OSVersion: "24.04", Source: "/i", Format: "raw", SHA256: strings.Repeat("a", 64), Size: 1}
	if err := st.PutImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DeleteImage(ctx, "ubuntu", "22.04"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("absent: %v", err)
	}
	task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:00:01", OSType: "ubuntu", OSVersion: "24.04"})
	if err != nil {
		t.Fatal(err)
	}
	// Another image's task does not hold this one.
	if _, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:00:02", OSType: "debian", OSVersion: "12"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DeleteImage(ctx, "ubuntu", "24.04"); !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), task.ID) {
		t.Fatalf("in use: %v", err)
	}
	if _, err := st.Transition(ctx, task.ID, wire.StatusCancelled, "test"); err != nil {
		t.Fatal(err)
	}
	got, err := st.DeleteImage(ctx, "ubuntu", "24.04")
	if err != nil || got.Source != "/i" {
		t.Fatalf("delete: %+v %v", got, err)
	}
	if _, err := st.GetImage(ctx, "ubuntu", "24.04"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("still there: %v", err)
	}
}
