package ui_test

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkLoopbackFanoutFloor measures what the kernel alone charges for
// a /ws fan-out on this box, with no lpmos and no WebSocket code: one
// writer thread writes a 300-byte buffer once to each of N loopback TCP
// sockets (one write system call each, as the /ws pool does), one reader
// thread takes them with epoll and one read per ready socket (as the
// benchmark's lean clients do). It reports each thread's CPU per message
// (RUSAGE_THREAD) and a null system call's, so the latency floor of N
// deliveries on 2 cores can be computed from measured costs:
//
//	go test -run '^$' -bench BenchmarkLoopbackFanoutFloor -benchtime 200x ./ui/
func BenchmarkLoopbackFanoutFloor(b *testing.B) {
	for _, n := range []int{100, 500, 1000} {
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) { benchLoopbackFloor(b, n) })
	}
}

func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchLoopbackFloor(b *testing.B, n int) {
	if err := raiseNoFile(); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr)
	wfds := make([]int, n)
	rfds := make([]int, n)
	for i := range n {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: addr.Port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			b.Fatal(err)
		}
		c, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		f, err := c.(*net.TCPConn).File() // a blocking duplicate: the writer's own fd
		c.Close()
		if err != nil {
			b.Fatal(err)
		}
		wfds[i], rfds[i] = int(f.Fd()), fd
		defer f.Close()
		defer syscall.Close(fd)
		_ = syscall.SetsockoptInt(wfds[i], syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	defer syscall.Close(ep)
	for i, fd := range rfds {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd), Pad: int32(i)}
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			b.Fatal(err)
		}
	}
	msg := make([]byte, 300)
	rounds := make(chan int)
	got := make(chan struct{})
	var readerCPU time.Duration
	var reads, waits int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the reader: one epoll loop
		defer wg.Done()
		runtime.LockOSThread()
		events := make([]syscall.EpollEvent, 256)
		buf := make([]byte, 64<<10)
		for want := range rounds {
			c0 := threadCPU()
			for seen := 0; seen < want; {
				k, err := syscall.EpollWait(ep, events, -1)
				if err != nil {
					continue
				}
				waits++
				for _, ev := range events[:k] {
					m, _ := syscall.Read(int(ev.Fd), buf)
					reads++
					seen += m / len(msg)
				}
			}
			readerCPU += threadCPU() - c0
			got <- struct{}{}
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var writerCPU, wall time.Duration
	for b.Loop() {
		rounds <- n
		t0, c0 := time.Now(), threadCPU()
		for _, fd := range wfds {
			if _, err := syscall.Write(fd, msg); err != nil {
				b.Fatal(err)
			}
		}
		writerCPU += threadCPU() - c0
		<-got
		wall += time.Since(t0)
	}
	close(rounds)
	wg.Wait()
	c0 := threadCPU()
	for range 100000 {
		syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
	}
	null := threadCPU() - c0
	msgs := float64(b.N * n)
	b.ReportMetric(float64(writerCPU.Nanoseconds())/1e3/msgs, "write-cpu-us/msg")
	b.ReportMetric(float64(readerCPU.Nanoseconds())/1e3/msgs, "read-cpu-us/msg")
	b.ReportMetric(float64(reads)/msgs, "reads/msg")
	b.ReportMetric(float64(waits)/msgs, "epoll-waits/msg")
	b.ReportMetric(float64(wall.Microseconds())/1e3/float64(b.N), "ms/round")
	b.ReportMetric(float64(null.Nanoseconds())/1e5, "null-syscall-ns")
}
