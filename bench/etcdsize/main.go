// Command etcdsize says what an lpmos etcd database holds, revision by
// revision (issue 14: etcd bytes per install): it opens the bbolt file of
// a stopped member (e.g. a `bench/fleet -keep` data dir) read-only and
// sums, per kind of key (/tasks/{id}/progress, /tasks/{id}/events/...),
// the versions kept (no compaction: every one) and their bytes.
//
//	go run ./bench/etcdsize [-per N] [-dump REGEXP] DATA_DIR_OR_DB_FILE
//
// -dump also prints every version of the keys matching REGEXP (revision,
// key, value), e.g. one task's: -dump /tasks/ID/
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

var (
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	macRE  = regexp.MustCompile(`([0-9a-f]{2}:){5}[0-9a-f]{2}`)
	numRE  = regexp.MustCompile(`/[0-9]{8,}`)
	// an event key's stamp since events14 (store/keys.go eventStamp)
	stampRE = regexp.MustCompile(`/events/[a-p][-0-9A-Za-z_]{10}$`)
)

// kind folds a key into its kind: ids, MACs and stamps replaced.
func kind(key string) string {
	k := uuidRE.ReplaceAllString(key, "{id}")
	k = macRE.ReplaceAllString(k, "{mac}")
	k = stampRE.ReplaceAllString(k, "/events/{n}")
	return numRE.ReplaceAllString(k, "/{n}")
}

type sum struct {
	versions, keyBytes, valBytes, recBytes int64
	sample                                 string
}

func main() {
	per := flag.Int("per", 0, "divide by this many installs (0: totals only)")
	dump := flag.String("dump", "", "also print every version of the keys matching this regexp")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: etcdsize [-per N] [-dump REGEXP] DATA_DIR_OR_DB_FILE")
	}
	var dumpRE *regexp.Regexp
	if *dump != "" {
		dumpRE = regexp.MustCompile(*dump)
	}
	path := flag.Arg(0)
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && d.Name() == "db" && filepath.Base(filepath.Dir(p)) == "snap" {
				path = p
			}
			return nil
		})
	}
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		log.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	sums := map[string]*sum{}
	var total sum
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return fmt.Errorf("%s has no key bucket", path)
		}
		return b.ForEach(func(rev, v []byte) error {
			var kv mvccpb.KeyValue
			if err := proto.Unmarshal(v, &kv); err != nil {
				return fmt.Errorf("decode revision %x: %w", rev, err)
			}
			k := kind(string(kv.Key))
			del := len(rev) > 17 && rev[17] == 't'
			if del {
				k += " (delete)"
			}
			if dumpRE != nil && dumpRE.MatchString(string(kv.Key)) {
				what := string(kv.Value)
				if del {
					what = "(delete)"
				}
				fmt.Printf("%8d %4d B  %s  %s\n", kv.ModRevision, len(rev)+len(v), kv.Key, what)
			}
			s := sums[k]
			if s == nil {
				s = &sum{sample: string(kv.Value)}
				sums[k] = s
			}
			for _, t := range []*sum{s, &total} {
				t.versions++
				t.keyBytes += int64(len(kv.Key))
				t.valBytes += int64(len(kv.Value))
				t.recBytes += int64(len(rev) + len(v))
			}
			return nil
		})
	})
	if err != nil {
		log.Fatal(err)
	}
	kinds := make([]string, 0, len(sums))
	for k := range sums {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return sums[kinds[i]].recBytes > sums[kinds[j]].recBytes })
	d := float64(max(1, *per))
	fmt.Printf("%-48s %10s %10s %10s %10s  %s\n", "key kind", "versions", "key B", "value B", "record B", "sample value")
	for _, k := range append(kinds, "TOTAL") {
		s := sums[k]
		if k == "TOTAL" {
			s = &total
		}
		fmt.Printf("%-48s %10.1f %10.0f %10.0f %10.0f  %s\n", k, float64(s.versions)/d, float64(s.keyBytes)/d,
			float64(s.valBytes)/d, float64(s.recBytes)/d, strings.TrimSpace(trunc(s.sample, 160)))
	}
	if *per > 0 {
		fmt.Printf("(per install: totals divided by %d)\n", *per)
	}
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
