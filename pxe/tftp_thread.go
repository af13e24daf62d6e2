package pxe

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// runThread serves x on a locked OS thread that blocks in read(2) on x's
// socket (made blocking, SO_RCVTIMEO as the retransmission timer). The
// kernel wakes this thread when the ACK arrives and it answers at once:
// no netpoller, no handoff to another thread, no Go timer. The loop bounds
// these transfers (ThreadTransfers tokens); x.thread is set and the token
// is taken by the caller, end returns it.
func (l *tftpLoop) runThread(x *tftpXfer) {
	defer l.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	// Shutdown: SHUT_RD makes the blocked read return 0 bytes. mu keeps it
	// from touching the fd number once end has closed it.
	var (
		mu     sync.Mutex
		closed bool
	)
	stop := context.AfterFunc(l.ctx, func() {
		mu.Lock()
		if !closed {
			_ = unix.Shutdown(x.fd, unix.SHUT_RD)
		}
		mu.Unlock()
	})
	err := x.serveBlocking(l)
	stop()
	mu.Lock()
	closed = true
	l.step(x, err)
	mu.Unlock()
}

var errTFTPShutdown = errors.New("server shutting down")

// serveBlocking runs x's transfer to its end: the error step expects
// (errTFTPDone once the last block is acknowledged).
func (x *tftpXfer) serveBlocking(l *tftpLoop) error {
	if err := unix.SetNonblock(x.fd, false); err != nil {
		return fmt.Errorf("blocking socket: %w", err)
	}
	// Sends never block (x.write uses MSG_DONTWAIT); only read waits.
	buf := make([]byte, 516)
	var cur time.Duration // SO_RCVTIMEO as set
	if err := x.send(); err != nil {
		return err
	}
	for {
		now := time.Now()
		rem := x.waitUntil.Sub(now)
		if rem <= 0 {
			if err := x.timedOut(now); err != nil {
				return err
			}
			continue
		}
		// Set the timer only when it would fire too late or much too early:
		// after an ACK the remaining time is the same timeout again.
		if rem > cur || rem < cur-cur/8 {
			tv := unix.NsecToTimeval(rem.Nanoseconds())
			if err := unix.SetsockoptTimeval(x.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				return fmt.Errorf("SO_RCVTIMEO: %w", err)
			}
			cur = rem
		}
		// Through Syscall, not raw: the runtime must know this thread
		// blocks (it may hand the P on; a stop-the-world does not wait).
		n, err := unix.Read(x.fd, buf)
		switch {
		case err == unix.EINTR, err == unix.EAGAIN: // EAGAIN: the timer fired
			continue
		case err != nil:
			return fmt.Errorf("receive: %w", err) // e.g. ECONNREFUSED: the client is gone
		case n == 0 && l.ctx.Err() != nil:
			return errTFTPShutdown
		}
		done, err := x.packet(buf[:n], time.Now())
		if err != nil {
			return err
		}
		if done {
			return errTFTPDone
		}
	}
}
