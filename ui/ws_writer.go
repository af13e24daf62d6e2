package ui

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// wsPool delivers the hub's messages to /ws connections that keep up: a
// worker per CPU writes each idle connection's queued frames with
// non-blocking system calls, one after the other, instead of waking one
// goroutine per client per event. A connection whose socket is full (a
// slow client) is handed to its own goroutine, which writes blocking with
// a timeout and gives the connection back once its queue is empty. At any
// time one writer at most (a worker or the connection's goroutine)
// delivers a connection's queue: the outQueue's busy flag says so; thus
// the queue's order and coalescing hold as before.
type wsPool struct {
	once    sync.Once
	workers []wsWorker
	next    atomic.Uint32
}

// wsOut is a /ws connection as the writers see it.
type wsOut struct {
	conn *wsConn
	pool *wsPool
	q    *outQueue
}

func (p *wsPool) add(o *wsOut) {
	p.once.Do(func() { p.workers = make([]wsWorker, runtime.GOMAXPROCS(0)) })
	p.workers[p.next.Add(1)%uint32(len(p.workers))].add(o)
}

// wsWorker is one goroutine, started on demand, that stays while it has
// connections to deliver and for wsWorkerIdle after (a goroutine started
// per event would grow its stack for the write path every time).
type wsWorker struct {
	mu      sync.Mutex
	ready   []*wsOut
	spare   []*wsOut
	running bool
	wake    chan struct{} // cap 1

	// The worker's scratch for one connection's batch (run only).
	items  []queued
	frames [][]byte
}

// A worker writes what a connection has queued with one system call: up
// to wsBatchFrames messages, or up to wsBatchBytes (a larger message goes
// alone).
const (
	wsBatchFrames = 64
	wsBatchBytes  = 64 << 10
)

const wsWorkerIdle = 5 * time.Second

func (w *wsWorker) add(o *wsOut) {
	w.mu.Lock()
	w.ready = append(w.ready, o)
	start := !w.running
	w.running = true
	if w.wake == nil {
		w.wake = make(chan struct{}, 1)
	}
	w.mu.Unlock()
	if start {
		go w.run()
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *wsWorker) run() {
	idle := time.NewTimer(wsWorkerIdle)
	defer idle.Stop()
	for {
		w.mu.Lock()
		batch := w.ready
		if len(batch) == 0 {
			w.mu.Unlock()
			idle.Reset(wsWorkerIdle)
			select {
			case <-w.wake:
				continue
			case <-idle.C:
			}
			w.mu.Lock()
			if len(w.ready) == 0 {
				w.running = false
				w.mu.Unlock()
				return
			}
			w.mu.Unlock()
			continue
		}
		w.ready, w.spare = w.spare[:0], nil
		w.mu.Unlock()
		for i, o := range batch {
			o.deliver(w)
			batch[i] = nil
		}
		w.mu.Lock()
		w.spare = batch[:0]
		w.mu.Unlock()
	}
}

// deliver writes o's queued messages while the socket takes them at once,
// everything queued at the time in one system call (a client that
// received several events since its last write gets them in one write);
// otherwise it hands o to the connection's goroutine (handOff). w's
// scratch holds the batch.
func (o *wsOut) deliver(w *wsWorker) {
	for {
		w.items = o.q.nextBatch(w.items[:0], wsBatchFrames, wsBatchBytes)
		if len(w.items) == 0 {
			return // the queue is empty and o is idle again
		}
		for _, it := range w.items {
			w.frames = append(w.frames, wsFrameNow(it.b, it.frame))
		}
		done, carry := o.conn.tryWriteFrames(w.frames)
		clear(w.items)
		clear(w.frames)
		w.frames = w.frames[:0]
		if !done {
			o.q.handOff(carry)
			return
		}
	}
}

// writeOwned is the connection's goroutine's part once takeHandoff gave it
// the queue: it writes carry (or only the pending rest), then the queue,
// blocking (write bounds each write with a timeout), until the queue is
// empty and the connection idle again. What is queued meanwhile goes in
// batches, as the pool's workers send it (deliver): up to wsBatchFrames
// messages or wsBatchBytes per write, in order. A client that fell behind
// once keeps its queue on this goroutine while messages keep coming (a
// dashboard during a stage-change wave), and one system call per message
// was most of the hub's CPU there (issue 14, wave9 in BENCHMARKS.md).
func (o *wsOut) writeOwned(carry []byte, write func(frames [][]byte) error) error {
	var first [1][]byte
	frames := first[:0]
	if carry != nil {
		frames = append(frames, carry)
	}
	if err := write(frames); err != nil {
		return err
	}
	var items []queued
	var batch [][]byte
	for {
		items = o.q.nextBatch(items[:0], wsBatchFrames, wsBatchBytes)
		if len(items) == 0 {
			return nil // the queue is empty and o is idle again
		}
		for _, it := range items {
			batch = append(batch, wsFrameNow(it.b, it.frame))
		}
		clear(items)
		err := write(batch)
		clear(batch)
		batch = batch[:0]
		if err != nil {
			return err
		}
	}
}
