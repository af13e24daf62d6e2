package ui_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/lpmos/lpmos/internal/testenv"
)

// browsers is the test process's one chromium (TestMain makes it and stops
// it after the tests).
var browsers *browserPool

// browserPool starts chromium once per test process, at the first test
// that asks for a browser, instead of once per test: a start costs more
// CPU than most of the tests' own work in it. Each test gets a browser
// context of its own (newBrowser), chromium's incognito profile: cookies,
// storage and cache are the test's and are gone when it ends, so the tests
// share the process, not state.
//
// chromium takes the certificate pins it accepts on its command line, so
// every HTTPS control plane of the package serves the pool's one key
// (newLiveTLS), pinned at the start; a server with any other key is
// refused (TestDashboardInBrowser checks).
type browserPool struct {
	key  *ecdsa.PrivateKey
	spki string // base64 sha256 of key's SubjectPublicKeyInfo

	// turn lets one test at a time drive chromium: the browser tests are
	// parallel with the package's other tests (whose time is mostly
	// waiting on etcd), but two pages at work at once on a 2-core machine
	// only slow each other down towards their 15 s polls. A test holds
	// its turn from its first newBrowser until it ends.
	turn    chan struct{}
	mu      sync.Mutex
	holders map[string]bool // top-level test names

	once    sync.Once
	browser context.Context // chromium's first tab; tabs of the tests derive from it
	err     error
	stop    func()
}

func newBrowserPool() (*browserPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	sum := sha256.Sum256(der)
	return &browserPool{key: key, spki: base64.StdEncoding.EncodeToString(sum[:]),
		turn: make(chan struct{}, 1), holders: map[string]bool{}}, nil
}

// chromiumOptions are the flags of the tests' chromium. Besides chromedp's
// defaults (headless, no extensions, sync, translation, background
// networking), what cuts CPU in a test that keeps a page open: no GPU
// process work, and reduced motion, which the dashboard's CSS honours
// (the pulsing status dots are infinite animations: 60 frames a second
// in every open page otherwise).
func chromiumOptions(chromium, dir, spki string) []chromedp.ExecAllocatorOption {
	return append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("force-prefers-reduced-motion", true),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1600, 1000),
		chromedp.Flag("ignore-certificate-errors-spki-list", spki),
	)
}

// start starts chromium the first time it is called.
func (p *browserPool) start(chromium string) (context.Context, error) {
	p.once.Do(func() {
		dir, err := os.MkdirTemp("", "lpmos-ui-chromium-")
		if err != nil {
			p.err = fmt.Errorf("chromium profile dir: %w", err)
			return
		}
		opts := chromiumOptions(chromium, dir, p.spki)
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		browser, cancelBrowser := chromedp.NewContext(alloc)
		p.stop = func() { cancelBrowser(); cancelAlloc(); _ = os.RemoveAll(dir) }
		if err := chromedp.Do(browser); err != nil { // starts chromium
			p.err = fmt.Errorf("start chromium: %w", err)
			return
		}
		p.browser = browser
	})
	return p.browser, p.err
}

// close stops chromium, if it was started.
func (p *browserPool) close() {
	if p.stop != nil {
		p.stop()
	}
}

// take waits for t's turn at chromium (see turn); a test that holds it
// already (a second newBrowser) goes on.
func (p *browserPool) take(t *testing.T) {
	t.Helper()
	name, _, _ := strings.Cut(t.Name(), "/")
	p.mu.Lock()
	held := p.holders[name]
	p.mu.Unlock()
	if held {
		return
	}
	p.turn <- struct{}{}
	p.mu.Lock()
	p.holders[name] = true
	p.mu.Unlock()
	t.Cleanup(func() {
		p.mu.Lock()
		delete(p.holders, name)
		p.mu.Unlock()
		<-p.turn
	})
}

// newBrowser returns a tab of the package's chromium in a browser context
// of the test's own (cookies, storage: nothing of another test), closed
// when the test ends. spkiPins are the base64 sha256 hashes of the server
// keys the test's pages load over HTTPS: they must be the pool's (what
// newLiveTLS serves), the one pin chromium runs with. A pin, not
// --ignore-certificate-errors.
func newBrowser(t *testing.T, spkiPins ...string) context.Context {
	t.Helper()
	chromium := testenv.RequireTool(t, "chromium", "chromium") // Debian's /usr/bin/chromium
	for _, pin := range spkiPins {
		if pin != browsers.spki {
			t.Fatalf("pin %s: chromium pins only the key newLiveTLS serves (%s)", pin, browsers.spki)
		}
	}
	browsers.take(t)
	root, err := browsers.start(chromium)
	if err != nil {
		t.Fatal(err)
	}
	tab, cancel := chromedp.NewContext(root, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	return tab
}
