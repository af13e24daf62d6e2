package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

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

// A WatchStored that names KindImage is sent the catalog's puts and
// deletes, in order with the task changes; a watch that does not name it
// (and an unfiltered Watch) is not.
func TestWatchStoredImageKind(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, rev, err := st.ListTasks(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	img := store.Image{OSType: "alma", OSVersion: "9", Source: "/srv/a.img", Format: "raw", SHA256: strings.Repeat("ab", 32), Size: 1}
	if err := st.PutImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	img.Size = 2
	if err := st.PutImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DeleteImage(ctx, "alma", "9"); err != nil {
		t.Fatal(err)
	}
	task, err := st.CreateTask(ctx, store.Spec{RegionID: "r1", TargetMAC: "02:00:00:00:0a:01", OSType: "alma", OSVersion: "9"})
	if err != nil {
		t.Fatal(err)
	}
	// Collect the kinds up to the task's creation, the last change made.
	collect := func(ch <-chan store.Change) []string {
		var got []string
		for {
			select {
			case c := <-ch:
				if c.Kind == store.KindImage {
					got = append(got, string(c.Kind)+" "+c.Key)
				}
				if c.Kind == store.KindTaskCreated && c.TaskID == task.ID {
					return append(got, string(c.Kind))
				}
			case <-ctx.Done():
				t.Fatalf("watch: saw %v, not the task", got)
			}
		}
	}
	want := "[image /images/alma/9 image /images/alma/9 image /images/alma/9 task]"
	if got := collect(st.WatchStored(ctx, rev+1, store.KindTaskCreated, store.KindImage)); fmt.Sprint(got) != want {
		t.Errorf("WatchStored(task, image) sent %v, want %v", got, want)
	}
	if got := collect(st.WatchStored(ctx, rev+1, store.KindTaskCreated)); fmt.Sprint(got) != "[task]" {
		t.Errorf("WatchStored(task) sent %v", got)
	}
	if got := collect(st.Watch(ctx, rev+1)); fmt.Sprint(got) != "[task]" {
		t.Errorf("Watch sent %v", got)
	}
}
