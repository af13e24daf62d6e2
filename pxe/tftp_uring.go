package pxe

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A minimal io_uring, only to send the datagrams one loop wake-up produced
// with one system call, each on its own transfer's connected socket (and
// to read the ACKs that woke it with one more).
//
// Why: with one sendto per DATA, each send wakes the client that waits
// for it, and on a box where clients and server share the CPUs that client
// preempts the loop before the next ACK is answered: a wake-up with 20
// ACKs pending is answered in 20 slices. sendmmsg batches only on one
// socket, and sharing one socket among transfers gives away the
// per-transfer server port (the secret an off-path attacker must guess to
// inject DATA or a spoofed ERROR). io_uring submits sends on any number of
// sockets in one io_uring_enter, so the clients run after the loop has
// answered them all.
//
// Only what that needs is here: IORING_OP_SEND and IORING_OP_RECV SQEs,
// submitted with io_uring_enter without waiting; UDP sends and receives
// with MSG_DONTWAIT complete inline (a full send buffer or an empty
// receive queue is -EAGAIN, as with sendto and read), so their CQEs are
// there when io_uring_enter returns. The structures and constants
// are the kernel's (include/uapi/linux/io_uring.h); x/sys/unix has the
// system call numbers only.

const (
	ioringOpSend = 26 // IORING_OP_SEND
	ioringOpRecv = 27 // IORING_OP_RECV

	ioringSetupClamp       = 1 << 4 // IORING_SETUP_CLAMP
	ioringSetupSubmitAll   = 1 << 7 // IORING_SETUP_SUBMIT_ALL: one bad SQE does not stop the rest
	ioringSetupCoopTaskrun = 1 << 8 // IORING_SETUP_COOP_TASKRUN: no IPI to run completions

	ioringFeatSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP
	ioringFeatNoDrop     = 1 << 1 // IORING_FEAT_NODROP: a full CQ ring never loses a CQE

	ioringEnterGetevents = 1 << 0 // IORING_ENTER_GETEVENTS

	ioringOffSQRing = 0          // IORING_OFF_SQ_RING
	ioringOffCQRing = 0x8000000  // IORING_OFF_CQ_RING
	ioringOffSQEs   = 0x10000000 // IORING_OFF_SQES

	tftpRingEntries = 256
)

// ioSQRingOffsets, ioCQRingOffsets and ioURingParams are struct
// io_sqring_offsets, io_cqring_offsets and io_uring_params.
type ioSQRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type ioCQRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type ioURingParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  ioSQRingOffsets
	cqOff                                                                  ioCQRingOffsets
}

// ioURingSQE is struct io_uring_sqe (64 bytes) as a send uses it.
type ioURingSQE struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	msgFlags    uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	pad         uint64
}

// ioURingCQE is struct io_uring_cqe (16 bytes, no CQE32).
type ioURingCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// tftpRing is one io_uring, used by the loop's goroutine only.
type tftpRing struct {
	fd        int
	sqMem     []byte // the SQ ring (and the CQ ring: IORING_FEAT_SINGLE_MMAP)
	cqMem     []byte // nil when shared with sqMem
	sqeMem    []byte
	sqTail    *uint32 // written by us, read by the kernel
	sqMask    uint32
	sqes      []ioURingSQE
	cqHead    *uint32 // written by us
	cqTail    *uint32 // written by the kernel
	cqMask    uint32
	cqes      []ioURingCQE
	sqEntries uint32
}

// newTFTPRing sets up a ring; an error (EPERM or ENOSYS: io_uring disabled
// by sysctl, seccomp or an old kernel) means sendto is used instead.
func newTFTPRing() (*tftpRing, error) {
	var p ioURingParams
	p.flags = ioringSetupClamp | ioringSetupSubmitAll | ioringSetupCoopTaskrun
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, tftpRingEntries, uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", e)
	}
	r := &tftpRing{fd: int(fd)}
	fail := func(err error) (*tftpRing, error) {
		r.close()
		return nil, err
	}
	if p.features&ioringFeatNoDrop == 0 {
		return fail(fmt.Errorf("io_uring: no IORING_FEAT_NODROP (kernel older than 5.5)"))
	}
	sqSize := int(p.sqOff.array) + int(p.sqEntries)*4
	cqSize := int(p.cqOff.cqes) + int(p.cqEntries)*int(unsafe.Sizeof(ioURingCQE{}))
	single := p.features&ioringFeatSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	mmap := func(off int64, size int) ([]byte, error) {
		b, err := unix.Mmap(r.fd, off, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("io_uring mmap: %w", err)
		}
		return b, nil
	}
	var err error
	if r.sqMem, err = mmap(ioringOffSQRing, sqSize); err != nil {
		return fail(err)
	}
	cq := r.sqMem
	if !single {
		if r.cqMem, err = mmap(ioringOffCQRing, cqSize); err != nil {
			return fail(err)
		}
		cq = r.cqMem
	}
	if r.sqeMem, err = mmap(ioringOffSQEs, int(p.sqEntries)*int(unsafe.Sizeof(ioURingSQE{}))); err != nil {
		return fail(err)
	}
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqEntries = p.sqEntries
	r.sqTail = u32(r.sqMem, p.sqOff.tail)
	r.sqMask = *u32(r.sqMem, p.sqOff.ringMask)
	r.sqes = unsafe.Slice((*ioURingSQE)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqHead = u32(cq, p.cqOff.head)
	r.cqTail = u32(cq, p.cqOff.tail)
	r.cqMask = *u32(cq, p.cqOff.ringMask)
	r.cqes = unsafe.Slice((*ioURingCQE)(unsafe.Pointer(&cq[p.cqOff.cqes])), p.cqEntries)
	// The SQ index array maps ring slot i to SQE i, once and for all.
	array := unsafe.Slice((*uint32)(unsafe.Pointer(&r.sqMem[p.sqOff.array])), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	return r, nil
}

func (r *tftpRing) close() {
	for _, b := range [][]byte{r.sqeMem, r.cqMem, r.sqMem} {
		if b != nil {
			_ = unix.Munmap(b)
		}
	}
	r.sqeMem, r.cqMem, r.sqMem = nil, nil, nil
	if r.fd >= 0 {
		_ = unix.Close(r.fd)
		r.fd = -1
	}
}

// tftpSend is one queued datagram: b (in the sender's arena) on socket fd
// for transfer x; or, for a receive, the buffer to read into.
type tftpSend struct {
	fd int
	b  []byte
	x  *tftpXfer
}

// submit submits q (at most sqEntries) as op (IORING_OP_SEND or
// IORING_OP_RECV) with MSG_DONTWAIT and waits for every completion; res[i]
// is then q[i]'s result (bytes sent or received, or -errno). The buffers
// must stay untouched until submit returns.
func (r *tftpRing) submit(op uint8, q []tftpSend, res []int32) error {
	if len(q) == 0 {
		return nil
	}
	tail := *r.sqTail // only we write it
	for i, s := range q {
		sqe := &r.sqes[(tail+uint32(i))&r.sqMask]
		*sqe = ioURingSQE{opcode: op, fd: int32(s.fd), addr: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(s.b)))),
			len: uint32(len(s.b)), msgFlags: unix.MSG_DONTWAIT, userData: uint64(i)}
	}
	atomic.StoreUint32(r.sqTail, tail+uint32(len(q))) // release: the SQEs before the tail
	// Raw: with nothing to wait for, io_uring_enter returns at once (the
	// sends complete inline), like the loop's other calls (tftp_raw.go).
	n, _, e := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(len(q)), 0, 0, 0, 0)
	if e != 0 || int(n) != len(q) {
		// SUBMIT_ALL: only a broken ring fails to take them all. The SQ
		// tail cannot be taken back, so the ring is not used again.
		return fmt.Errorf("io_uring_enter: submitted %d of %d: %w", n, len(q), errno(e))
	}
	left := len(q)
	for left > 0 {
		head := *r.cqHead
		ctail := atomic.LoadUint32(r.cqTail) // acquire: the CQEs before the tail
		for ; head != ctail; head++ {
			c := &r.cqes[head&r.cqMask]
			if c.userData < uint64(len(res)) {
				res[c.userData] = c.res
			}
			left--
		}
		atomic.StoreUint32(r.cqHead, head)
		if left > 0 {
			// A send the kernel did not finish inline (never seen with
			// MSG_DONTWAIT UDP): wait for it, through the runtime.
			_, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, uintptr(left), ioringEnterGetevents, 0, 0)
			if e != 0 && e != unix.EINTR {
				return fmt.Errorf("io_uring_enter (wait): %w", e)
			}
		}
	}
	return nil
}

// tftpFailed is a queued datagram the kernel refused.
type tftpFailed struct {
	x   *tftpXfer
	err error
}

// tftpArena is the bytes the datagrams of one batch are built in: a
// batch is sent early when its datagrams outgrow it (a window of large
// blocks) or the ring's entries.
const tftpArena = 128 << 10

// tftpOut sends the loop's datagrams. With a ring, send queues them (built
// in the arena) and flush, once per loop wake-up, hands them all to the
// kernel with one io_uring_enter; without one, send calls sendto at once
// and every datagram is built in the same buffer.
type tftpOut struct {
	sys     tftpSys
	ring    *tftpRing
	arena   []byte
	used    int // bytes of arena queued
	q       []tftpSend
	res     []int32
	closing []int        // transfer sockets to close once the queue is sent
	failed  []tftpFailed // sends refused (not EAGAIN): their transfers end
	ringErr error        // why the ring was given up, for the loop to log
}

func newTFTPOut(sys tftpSys, ring *tftpRing) *tftpOut {
	o := &tftpOut{sys: sys, ring: ring}
	if ring != nil {
		o.arena = make([]byte, tftpArena)
		o.q = make([]tftpSend, 0, ring.sqEntries)
		o.res = make([]int32, ring.sqEntries)
	}
	return o
}

// buf returns n bytes to build the next datagram in; the next send must
// be of (a prefix of) them.
func (o *tftpOut) buf(n int) []byte {
	if o.ring == nil {
		if len(o.arena) < n {
			o.arena = make([]byte, n)
		}
		return o.arena[:n]
	}
	if o.used+n > len(o.arena) || len(o.q) == cap(o.q) {
		o.flush()
		if o.ring == nil {
			return o.buf(n)
		}
	}
	return o.arena[o.used : o.used+n : o.used+n]
}

// send sends b, built in the last buf, on transfer x's socket fd. An error
// is returned at once without a ring; with one, refused sends are listed
// in failed when the queue is flushed. A full send buffer (EAGAIN) is a
// lost datagram: the retransmission timer sends it again.
func (o *tftpOut) send(x *tftpXfer, fd int, b []byte) error {
	if o.ring == nil {
		return o.sendto(fd, b)
	}
	o.used += len(b)
	o.q = append(o.q, tftpSend{fd: fd, b: b, x: x})
	return nil
}

func (o *tftpOut) sendto(fd int, b []byte) error {
	for {
		_, err := o.sys.write(fd, b)
		switch err {
		case nil, unix.EAGAIN:
			return nil
		case unix.EINTR:
			continue
		}
		return fmt.Errorf("send: %w", err)
	}
}

// close closes a transfer's socket, after the datagrams queued for it
// are sent (its number must not be reused before).
func (o *tftpOut) close(fd int) {
	if len(o.q) == 0 {
		_ = o.sys.close(fd)
		return
	}
	o.closing = append(o.closing, fd)
}

// flush sends the queue, then closes the sockets waiting for it. If the
// ring fails, it is given up (ringErr) and sendto used from then on; the
// queued datagrams are lost and resent by the retransmission timers.
func (o *tftpOut) flush() {
	if len(o.q) == 1 {
		// Alone, it gains nothing from the ring (its client is the only one
		// woken) and sendto costs less than io_uring_enter: the sequential
		// case, one transfer, one ACK per wake-up.
		s := o.q[0]
		o.q[0] = tftpSend{}
		o.q, o.used = o.q[:0], 0
		if err := o.sendto(s.fd, s.b); err != nil {
			o.failed = append(o.failed, tftpFailed{x: s.x, err: err})
		}
	}
	if len(o.q) > 0 {
		res := o.res[:len(o.q)]
		if err := o.ring.submit(ioringOpSend, o.q, res); err != nil {
			o.dropRing(err) // sends the queue with sendto
		} else {
			for i, r := range res {
				if r < 0 && unix.Errno(-r) != unix.EAGAIN {
					o.failed = append(o.failed, tftpFailed{x: o.q[i].x, err: fmt.Errorf("send: %w", unix.Errno(-r))})
				}
			}
		}
		clear(o.q) // drop the transfers' pointers
		o.q = o.q[:0]
		o.used = 0
	}
	for _, fd := range o.closing {
		_ = o.sys.close(fd)
	}
	o.closing = o.closing[:0]
}

// dropRing gives the ring up after err: sendto and read from now on. The
// datagrams queued are sent with sendto (some maybe twice, if the ring
// took them before failing: a duplicate DATA or ERROR is harmless).
func (o *tftpOut) dropRing(err error) {
	o.ringErr = err
	o.ring.close()
	o.ring = nil
	for _, s := range o.q {
		if err := o.sendto(s.fd, s.b); err != nil {
			o.failed = append(o.failed, tftpFailed{x: s.x, err: err})
		}
	}
	clear(o.q)
	o.q = o.q[:0]
	o.used = 0
	o.arena = nil // the kernel may still read it: the next datagram gets a new buffer
}
