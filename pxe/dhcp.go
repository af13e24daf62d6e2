package pxe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Mode selects what the DHCP service does.
type Mode string

// DHCP modes.
const (
	// ModeProxy answers PXE/HTTP clients with boot information only
	// (yiaddr 0.0.0.0); another DHCP server hands out the addresses.
	ModeProxy Mode = "proxy"
	// ModeFull hands out addresses from a range as well.
	ModeFull Mode = "full"
	// ModeOff runs no DHCP service.
	ModeOff Mode = "off"
)

// Machines tells the DHCP server which MACs it may answer.
type Machines interface {
	// Allowed reports whether lpmos should boot this MAC: a task exists for
	// it, or discovery of unknown machines is on.
	Allowed(ctx context.Context, mac net.HardwareAddr) (bool, error)
}

// MachinesFunc adapts a function to Machines.
type MachinesFunc func(ctx context.Context, mac net.HardwareAddr) (bool, error)

// Allowed implements Machines.
func (f MachinesFunc) Allowed(ctx context.Context, mac net.HardwareAddr) (bool, error) {
	return f(ctx, mac)
}

// DHCPConfig configures the DHCP service.
type DHCPConfig struct {
	// Mode is proxy (default), full or off.
	Mode Mode
	// ServerIP is the IPv4 address the clients reach lpmos at: next server
	// (siaddr), server identifier (option 54) and the host of the HTTP URLs.
	// Required.
	ServerIP net.IP
	// Interface, when set, binds the sockets to that device (SO_BINDTODEVICE).
	Interface string
	// HTTPPort is the port of the boot HTTP handler (BootHandler): iPXE gets
	// http://ServerIP:HTTPPort/boot/<mac>.ipxe, UEFI HTTP boot clients
	// http://ServerIP:HTTPPort/boot/ipxe/ipxe.efi. Required.
	HTTPPort int
	// UEFIBootFile is the iPXE build for x86 UEFI clients: FileUEFI
	// (default) or FileUEFISNP.
	UEFIBootFile string
	// Machines decides which MACs are answered. Required unless Mode is off.
	Machines Machines
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// DHCPAddr and PXEAddr are the listen addresses; default ":67" and ":4011".
	DHCPAddr string
	PXEAddr  string
	// BootFiles is the set of iPXE builds offered over TFTP; default
	// IPXEFiles(). A client whose architecture has no build gets no answer.
	BootFiles fs.FS
	// Full configures full mode; ignored otherwise.
	Full FullDHCP
	// Now returns the current time (tests); default time.Now.
	Now func() time.Time
}

// FullDHCP is the address pool of full mode.
type FullDHCP struct {
	RangeStart, RangeEnd net.IP // inclusive, IPv4, same subnet as ServerIP
	Netmask              net.IPMask
	Router               net.IP   // option 3, optional
	DNS                  []net.IP // option 6, optional
	LeaseTime            time.Duration
	// Leases stores the leases. Required in full mode.
	Leases Leases
	// AnswerAll also gives addresses (without boot options) to clients that
	// are not PXE/HTTP clients or that Machines does not allow.
	AnswerAll bool
}

// DHCPStats counts packets. Received = Answered + Ignored + Malformed + Errors
// once the packets in flight are handled.
type DHCPStats struct {
	Received  uint64 `json:"received"`
	Answered  uint64 `json:"answered"`
	Ignored   uint64 `json:"ignored"`
	Malformed uint64 `json:"malformed"`
	Errors    uint64 `json:"errors"`
}

// ProxyDHCP is the DHCP service (proxy or full mode).
type ProxyDHCP struct {
	cfg DHCPConfig
	log *slog.Logger

	received, answered, ignored, malformed, errs atomic.Uint64

	leaseMu sync.Mutex // serialises full-mode allocation
}

// service says which socket a packet came in on.
type service int

const (
	svcDHCP service = iota // port 67
	svcPXE                 // port 4011 (PXE boot server / iPXE ProxyDHCPREQUEST)
)

func (s service) String() string {
	if s == svcPXE {
		return "pxe"
	}
	return "dhcp"
}

const (
	defaultLeaseTime = time.Hour
	offerHold        = time.Minute // an offered address is kept this long for the REQUEST
	allowedTimeout   = 3 * time.Second
	maxInFlight      = 32
	maxPoolSize      = 1 << 16
)

// NewProxyDHCP checks cfg and returns the service.
func NewProxyDHCP(cfg DHCPConfig) (*ProxyDHCP, error) {
	if cfg.Mode == "" {
		cfg.Mode = ModeProxy
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DHCPAddr == "" {
		cfg.DHCPAddr = ":" + strconv.Itoa(serverPort)
	}
	if cfg.PXEAddr == "" {
		cfg.PXEAddr = ":" + strconv.Itoa(pxeServicePort)
	}
	if cfg.UEFIBootFile == "" {
		cfg.UEFIBootFile = FileUEFI
	}
	if cfg.BootFiles == nil {
		cfg.BootFiles = IPXEFiles()
	}
	s := &ProxyDHCP{cfg: cfg, log: cfg.Logger.With("service", "dhcp", "mode", string(cfg.Mode))}
	switch cfg.Mode {
	case ModeOff:
		return s, nil
	case ModeProxy, ModeFull:
	default:
		return nil, fmt.Errorf("dhcp: unknown mode %q (want proxy, full or off)", cfg.Mode)
	}
	if cfg.ServerIP.To4() == nil || cfg.ServerIP.IsUnspecified() {
		return nil, fmt.Errorf("dhcp: server IP %q is not a usable IPv4 address", cfg.ServerIP)
	}
	s.cfg.ServerIP = cfg.ServerIP.To4()
	if cfg.HTTPPort <= 0 || cfg.HTTPPort > 65535 {
		return nil, fmt.Errorf("dhcp: HTTP port %d out of range", cfg.HTTPPort)
	}
	if cfg.Machines == nil {
		return nil, errors.New("dhcp: Machines is required")
	}
	if !hasFile(cfg.BootFiles, cfg.UEFIBootFile) {
		return nil, fmt.Errorf("dhcp: UEFI boot file %q is not among the iPXE builds", cfg.UEFIBootFile)
	}
	if !hasFile(cfg.BootFiles, FileBIOS) {
		return nil, fmt.Errorf("dhcp: BIOS boot file %q is not among the iPXE builds", FileBIOS)
	}
	if cfg.Mode == ModeFull {
		if err := s.checkFull(); err != nil {
			return nil, fmt.Errorf("dhcp: full mode: %w", err)
		}
	}
	return s, nil
}

func (s *ProxyDHCP) checkFull() error {
	f := &s.cfg.Full
	if f.Leases == nil {
		return errors.New("Leases is required")
	}
	start, end := f.RangeStart.To4(), f.RangeEnd.To4()
	if start == nil || end == nil {
		return fmt.Errorf("range %v-%v is not IPv4", f.RangeStart, f.RangeEnd)
	}
	a, b := binary.BigEndian.Uint32(start), binary.BigEndian.Uint32(end)
	if a > b {
		return fmt.Errorf("range start %v is after end %v", start, end)
	}
	if b-a >= maxPoolSize {
		return fmt.Errorf("range %v-%v has more than %d addresses", start, end, maxPoolSize)
	}
	if len(f.Netmask) != net.IPv4len {
		if m := net.IP(f.Netmask).To4(); m != nil {
			f.Netmask = net.IPMask(m)
		} else {
			return fmt.Errorf("netmask %v is not IPv4", f.Netmask)
		}
	}
	if ones, bits := f.Netmask.Size(); bits == 0 || ones == 0 {
		return fmt.Errorf("netmask %v is not a valid mask", f.Netmask)
	}
	network := &net.IPNet{IP: start.Mask(f.Netmask), Mask: f.Netmask}
	if !network.Contains(end) {
		return fmt.Errorf("range %v-%v is not inside one %v subnet", start, end, net.IP(f.Netmask))
	}
	if f.Router != nil && f.Router.To4() == nil {
		return fmt.Errorf("router %v is not IPv4", f.Router)
	}
	for _, d := range f.DNS {
		if d.To4() == nil {
			return fmt.Errorf("DNS server %v is not IPv4", d)
		}
	}
	f.RangeStart, f.RangeEnd = start, end
	if f.LeaseTime <= 0 {
		f.LeaseTime = defaultLeaseTime
	}
	return nil
}

// Stats returns the packet counters.
func (s *ProxyDHCP) Stats() DHCPStats {
	return DHCPStats{
		Received:  s.received.Load(),
		Answered:  s.answered.Load(),
		Ignored:   s.ignored.Load(),
		Malformed: s.malformed.Load(),
		Errors:    s.errs.Load(),
	}
}

// Start listens on DHCPAddr (67) and PXEAddr (4011) and serves until ctx is
// done. In mode off it returns nil at once.
func (s *ProxyDHCP) Start(ctx context.Context) error {
	if s.cfg.Mode == ModeOff {
		s.log.InfoContext(ctx, "dhcp service is off")
		return nil
	}
	dhcpConn, err := listenUDP(ctx, s.cfg.DHCPAddr, s.cfg.Interface)
	if err != nil {
		return fmt.Errorf("dhcp: listen %s: %w", s.cfg.DHCPAddr, err)
	}
	pxeConn, err := listenUDP(ctx, s.cfg.PXEAddr, s.cfg.Interface)
	if err != nil {
		dhcpConn.Close()
		return fmt.Errorf("dhcp: listen %s: %w", s.cfg.PXEAddr, err)
	}
	s.log.InfoContext(ctx, "dhcp listening", "dhcp_addr", dhcpConn.LocalAddr().String(),
		"pxe_addr", pxeConn.LocalAddr().String(), "server_ip", s.cfg.ServerIP.String(),
		"interface", s.cfg.Interface)
	errc := make(chan error, 2)
	go func() { errc <- s.serve(ctx, dhcpConn, svcDHCP) }()
	go func() { errc <- s.serve(ctx, pxeConn, svcPXE) }()
	err1, err2 := <-errc, <-errc
	return errors.Join(err1, err2)
}

// listenUDP opens a UDP socket that may send broadcasts, optionally bound to
// one device.
func listenUDP(ctx context.Context, addr, iface string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				serr = fmt.Errorf("SO_REUSEADDR: %w", serr)
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("SO_BROADCAST: %w", serr)
				return
			}
			if iface != "" {
				if serr = unix.BindToDevice(int(fd), iface); serr != nil {
					serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, serr)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// serve reads packets from conn until ctx is done, then closes conn.
func (s *ProxyDHCP) serve(ctx context.Context, conn *net.UDPConn, svc service) error {
	pc := ipv4.NewPacketConn(conn)
	// The interface index lets broadcast replies leave through the interface
	// the request came in on, even without SO_BINDTODEVICE.
	cmOK := pc.SetControlMessage(ipv4.FlagInterface, true) == nil

	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxInFlight)
	buf := make([]byte, 2*maxPacketLen)
	for {
		n, cm, peer, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			conn.Close()
			return fmt.Errorf("dhcp: read on %s: %w", svc, err)
		}
		ifIndex := 0
		if cmOK && cm != nil {
			ifIndex = cm.IfIndex
		}
		udpPeer, _ := peer.(*net.UDPAddr)
		data := append([]byte(nil), buf[:n]...)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.handle(ctx, pc, data, udpPeer, ifIndex, svc)
		}()
	}
}

// handle answers one packet and counts it. It never panics.
func (s *ProxyDHCP) handle(ctx context.Context, pc *ipv4.PacketConn, data []byte, peer *net.UDPAddr, ifIndex int, svc service) {
	s.received.Add(1)
	defer func() {
		if r := recover(); r != nil {
			s.malformed.Add(1)
			s.log.ErrorContext(ctx, "dhcp: panic handling packet", "panic", fmt.Sprint(r), "peer", peer.String())
		}
	}()
	res := s.respond(ctx, data, peer, svc)
	switch res.outcome {
	case outMalformed:
		s.malformed.Add(1)
		s.log.DebugContext(ctx, "dhcp: malformed packet dropped", "peer", peer.String(), "err", res.err)
		return
	case outIgnored:
		s.ignored.Add(1)
		return
	case outError:
		s.errs.Add(1)
		return
	}
	var cm *ipv4.ControlMessage
	if ifIndex > 0 && res.dst.IP.Equal(net.IPv4bcast) {
		cm = &ipv4.ControlMessage{IfIndex: ifIndex}
	}
	if _, err := pc.WriteTo(res.reply.ToBytes(), cm, res.dst); err != nil {
		s.errs.Add(1)
		s.log.ErrorContext(ctx, "dhcp: send reply", "dst", res.dst.String(), "err", err)
		return
	}
	s.answered.Add(1)
}

type outcome int

const (
	outAnswer outcome = iota
	outIgnored
	outMalformed
	outError
)

// result is what respond decided about one packet.
type result struct {
	outcome outcome
	reply   *dhcpv4.DHCPv4
	dst     *net.UDPAddr
	err     error
}

func ignored() result { return result{outcome: outIgnored} }

// respond decides the answer to one packet. It touches no socket, so tests
// and FuzzHandle call it directly.
func (s *ProxyDHCP) respond(ctx context.Context, data []byte, peer *net.UDPAddr, svc service) result {
	req, err := parsePacket(data)
	if err != nil {
		return result{outcome: outMalformed, err: err}
	}
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		if req.OpCode == dhcpv4.OpcodeBootReply {
			return ignored() // another server's answer
		}
		return result{outcome: outMalformed, err: fmt.Errorf("%w: op %d", errMalformed, req.OpCode)}
	}
	mt := req.MessageType()
	if mt == dhcpv4.MessageTypeNone {
		return result{outcome: outMalformed, err: fmt.Errorf("%w: no message type", errMalformed)}
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		s.log.DebugContext(ctx, "dhcp: not Ethernet, ignored", "htype", uint16(req.HWType), "hlen", len(req.ClientHWAddr))
		return ignored()
	}
	mac := req.ClientHWAddr
	vendor := req.ClassIdentifier()
	arch, _ := clientArch(req)
	ipxe := isIPXE(req)
	log := s.log.With("mac", mac.String(), "xid", fmt.Sprintf("%#08x", binary.BigEndian.Uint32(req.TransactionID[:])),
		"msg", mt.String(), "port", svc.String(), "arch", uint16(arch), "ipxe", ipxe)

	pxeClient := hasPrefixFold(vendor, vendorPXEClient) || hasPrefixFold(vendor, vendorHTTPClient)
	full := s.cfg.Mode == ModeFull
	answerAddressOnly := full && s.cfg.Full.AnswerAll && svc == svcDHCP
	if !pxeClient && !answerAddressOnly {
		log.DebugContext(ctx, "dhcp: not a PXE/HTTP client, ignored", "vendor_class", vendor)
		return ignored()
	}

	var boot *bootChoice
	if pxeClient {
		actx, cancel := context.WithTimeout(ctx, allowedTimeout)
		ok, err := s.cfg.Machines.Allowed(actx, mac)
		cancel()
		switch {
		case err != nil:
			log.ErrorContext(ctx, "dhcp: machine lookup failed, not answered", "err", err)
			return result{outcome: outError, err: err}
		case !ok:
			log.InfoContext(ctx, "dhcp: machine not allowed to boot lpmos, ignored")
		default:
			b, err := s.bootFor(mac, vendor, arch, ipxe)
			if err != nil {
				log.WarnContext(ctx, "dhcp: no boot file for this client, ignored", "reason", err.Error())
			} else {
				boot = &b
			}
		}
		if boot == nil && !answerAddressOnly {
			return ignored()
		}
	}

	switch {
	case svc == svcPXE:
		// iPXE's ProxyDHCPREQUEST and PXE boot server requests: ACK unicast.
		if (mt != dhcpv4.MessageTypeRequest && mt != dhcpv4.MessageTypeInform) || boot == nil {
			return ignored()
		}
		reply := s.newReply(req, dhcpv4.MessageTypeAck)
		reply.ClientIPAddr = ip4(req.ClientIPAddr)
		s.addBoot(reply, req, boot)
		log.InfoContext(ctx, "dhcp: ACK on PXE port", "file", boot.file)
		return result{reply: reply, dst: peer}
	case !full:
		return s.respondProxy(ctx, log, req, mt, boot)
	default:
		return s.respondFull(ctx, log, req, mt, boot)
	}
}

func (s *ProxyDHCP) respondProxy(ctx context.Context, log *slog.Logger, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, boot *bootChoice) result {
	var reply *dhcpv4.DHCPv4
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		reply = s.newReply(req, dhcpv4.MessageTypeOffer)
	case dhcpv4.MessageTypeRequest:
		// A REQUEST names the server it is for: the real DHCP server's is
		// none of ours. One that asks for an address (option 50) is for the
		// DHCP server even when it shares our IP (dnsmasq on the lpmos box):
		// an ACK without an address from us makes firmware DECLINE its lease
		// (seen with OVMF). PXE clients send their boot REQUEST to 4011.
		if sid := req.ServerIdentifier(); sid == nil || !sid.Equal(s.cfg.ServerIP) || req.RequestedIPAddress() != nil {
			return ignored()
		}
		reply = s.newReply(req, dhcpv4.MessageTypeAck)
		reply.ClientIPAddr = ip4(req.ClientIPAddr)
	default:
		return ignored()
	}
	s.addBoot(reply, req, boot)
	log.InfoContext(ctx, "dhcp: proxy answer", "reply", reply.MessageType().String(), "file", boot.file)
	return result{reply: reply, dst: s.replyDest(req, false)}
}

func (s *ProxyDHCP) respondFull(ctx context.Context, log *slog.Logger, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, boot *bootChoice) result {
	mac := req.ClientHWAddr
	f := &s.cfg.Full
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		ip, err := s.offerAddr(ctx, mac, req.RequestedIPAddress())
		if err != nil {
			log.WarnContext(ctx, "dhcp: no address to offer", "err", err)
			return result{outcome: outError, err: err}
		}
		reply := s.newReply(req, dhcpv4.MessageTypeOffer)
		reply.YourIPAddr = ip
		s.addLease(reply, f)
		s.addBoot(reply, req, boot)
		log.InfoContext(ctx, "dhcp: offer", "ip", ip.String(), "file", bootFile(boot))
		return result{reply: reply, dst: s.replyDest(req, false)}
	case dhcpv4.MessageTypeRequest:
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(s.cfg.ServerIP) {
			return ignored() // the client took another server's offer
		}
		want := req.RequestedIPAddress()
		if want == nil && !req.ClientIPAddr.IsUnspecified() {
			want = ip4(req.ClientIPAddr)
		}
		ok, err := s.ackAddr(ctx, mac, want)
		if err != nil {
			log.ErrorContext(ctx, "dhcp: lease store", "err", err)
			return result{outcome: outError, err: err}
		}
		if !ok {
			log.InfoContext(ctx, "dhcp: NAK", "requested", fmt.Sprint(want))
			nak := s.newReply(req, dhcpv4.MessageTypeNak)
			nak.ServerIPAddr = net.IPv4zero
			nak.SetBroadcast()
			nak.UpdateOption(dhcpv4.OptMessage("requested address not available"))
			return result{reply: nak, dst: s.replyDest(req, true)}
		}
		reply := s.newReply(req, dhcpv4.MessageTypeAck)
		reply.ClientIPAddr = ip4(req.ClientIPAddr)
		reply.YourIPAddr = want
		s.addLease(reply, f)
		s.addBoot(reply, req, boot)
		log.InfoContext(ctx, "dhcp: ack", "ip", want.String(), "file", bootFile(boot))
		return result{reply: reply, dst: s.replyDest(req, false)}
	case dhcpv4.MessageTypeRelease:
		if err := s.release(ctx, mac, ip4(req.ClientIPAddr)); err != nil {
			log.ErrorContext(ctx, "dhcp: release", "err", err)
			return result{outcome: outError, err: err}
		}
		return ignored() // RELEASE has no answer
	}
	return ignored()
}

// newReply starts a BOOTREPLY for req with the message type and server id.
//
// It is not dhcpv4.NewReplyFromRequest: that also echoes options 61 and 82,
// which this server has never sent, and draws a random transaction ID only to
// overwrite it. The reply is built the same way from the library's parts.
func (s *ProxyDHCP) newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	r := &dhcpv4.DHCPv4{
		ClientIPAddr: net.IPv4zero,
		YourIPAddr:   net.IPv4zero,
		Options:      make(dhcpv4.Options, 8),
	}
	for _, m := range []dhcpv4.Modifier{
		dhcpv4.WithReply(req), // op, htype, xid, flags, chaddr
		dhcpv4.WithGatewayIP(ip4(req.GatewayIPAddr)),
		dhcpv4.WithServerIP(s.cfg.ServerIP),
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)),
	} {
		m(r)
	}
	return r
}

// replyDest is where a port-67 answer goes (RFC 2131 4.1).
func (s *ProxyDHCP) replyDest(req *dhcpv4.DHCPv4, nak bool) *net.UDPAddr {
	switch {
	case !ip4(req.GatewayIPAddr).IsUnspecified():
		return &net.UDPAddr{IP: ip4(req.GatewayIPAddr), Port: serverPort}
	case !nak && !ip4(req.ClientIPAddr).IsUnspecified():
		return &net.UDPAddr{IP: ip4(req.ClientIPAddr), Port: clientPort}
	default:
		// The client has no address yet: broadcast (a UDP socket cannot
		// unicast to an address that does not answer ARP).
		return &net.UDPAddr{IP: net.IPv4bcast, Port: clientPort}
	}
}

func (s *ProxyDHCP) addLease(r *dhcpv4.DHCPv4, f *FullDHCP) {
	secs := time.Duration(uint32(f.LeaseTime/time.Second)) * time.Second
	r.UpdateOption(dhcpv4.OptIPAddressLeaseTime(secs))
	r.UpdateOption(dhcpv4.OptRenewTimeValue(secs / time.Second / 2 * time.Second))
	r.UpdateOption(dhcpv4.OptRebindingTimeValue(secs / time.Second / 8 * 7 * time.Second))
	r.UpdateOption(dhcpv4.OptSubnetMask(f.Netmask))
	if f.Router != nil {
		r.UpdateOption(dhcpv4.OptRouter(f.Router))
	}
	if len(f.DNS) > 0 {
		r.UpdateOption(dhcpv4.OptDNS(f.DNS...))
	}
}

// bootChoice is what a PXE client is told to load.
type bootChoice struct {
	file   string // TFTP file name or HTTP URL
	vendor string // option 60 of the reply
}

func bootFile(b *bootChoice) string {
	if b == nil {
		return ""
	}
	return b.file
}

// bootFor picks the boot file for a PXE/HTTP client: vendor is its option
// 60, arch the first of option 93, ipxe whether option 77 says iPXE.
func (s *ProxyDHCP) bootFor(mac net.HardwareAddr, vendor string, arch iana.Arch, ipxe bool) (bootChoice, error) {
	httpClient := hasPrefixFold(vendor, vendorHTTPClient)
	if ipxe {
		// iPXE is already running: hand it the script, or it loops.
		v := vendorPXEClient
		if httpClient {
			v = vendorHTTPClient
		}
		return bootChoice{file: s.ScriptURL(mac), vendor: v}, nil
	}
	switch arch {
	case iana.INTEL_X86PC:
		return bootChoice{file: FileBIOS, vendor: vendorPXEClient}, nil
	case iana.EFI_IA32, iana.EFI_X86_64, iana.EFI_BC:
		return bootChoice{file: s.cfg.UEFIBootFile, vendor: vendorPXEClient}, nil
	case iana.EFI_ARM64:
		if !hasFile(s.cfg.BootFiles, FileUEFIARM64) {
			return bootChoice{}, fmt.Errorf("arm64 UEFI client, but no arm64 iPXE build (%s) is embedded", FileUEFIARM64)
		}
		return bootChoice{file: FileUEFIARM64, vendor: vendorPXEClient}, nil
	case iana.EFI_X86_64_HTTP:
		return bootChoice{file: s.binaryURL(FileUEFI), vendor: vendorHTTPClient}, nil
	case iana.EFI_ARM64_HTTP:
		if !hasFile(s.cfg.BootFiles, FileUEFIARM64) {
			return bootChoice{}, fmt.Errorf("arm64 UEFI HTTP client, but no arm64 iPXE build (%s) is embedded", FileUEFIARM64)
		}
		return bootChoice{file: s.binaryURL(FileUEFIARM64), vendor: vendorHTTPClient}, nil
	}
	return bootChoice{}, fmt.Errorf("client architecture %d is not supported", uint16(arch))
}

// ScriptURL is the URL of mac's iPXE script on the boot HTTP handler.
func (s *ProxyDHCP) ScriptURL(mac net.HardwareAddr) string {
	return s.httpBase() + ScriptPath(mac)
}

func (s *ProxyDHCP) binaryURL(name string) string {
	return s.httpBase() + ipxeHTTPPrefix + name
}

func (s *ProxyDHCP) httpBase() string {
	return "http://" + net.JoinHostPort(s.cfg.ServerIP.String(), strconv.Itoa(s.cfg.HTTPPort))
}

// addBoot sets the PXE boot fields: next server, boot file, option 60, the
// client's UUID (97) and, for PXE clients, option 43 with discovery control.
//
// The boot file goes in the BOOTP file field, which PXE ROMs read; option 67
// (dhcpv4.OptBootFileName) is not sent.
func (s *ProxyDHCP) addBoot(r *dhcpv4.DHCPv4, req *dhcpv4.DHCPv4, boot *bootChoice) {
	if boot == nil {
		return
	}
	r.ServerIPAddr = s.cfg.ServerIP
	r.BootFileName = boot.file
	r.UpdateOption(dhcpv4.OptClassIdentifier(boot.vendor))
	if req.Options.Has(dhcpv4.OptionClientMachineIdentifier) {
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, req.Options.Get(dhcpv4.OptionClientMachineIdentifier)))
	}
	if boot.vendor == vendorPXEClient {
		// PXE_DISCOVERY_CONTROL = 8: no boot server discovery, use the file.
		r.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{pxeDiscoveryCtl, 1, pxeDiscoverySkip, pxeVendorEnd}))
	}
}

// offerAddr picks the address to offer mac and holds it for offerHold.
func (s *ProxyDHCP) offerAddr(ctx context.Context, mac net.HardwareAddr, requested net.IP) (net.IP, error) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	now := s.cfg.Now()
	f := &s.cfg.Full
	hold := offerHold
	if f.LeaseTime < hold {
		hold = f.LeaseTime
	}
	own, ok, err := f.Leases.Get(ctx, mac)
	if err != nil {
		return nil, fmt.Errorf("get lease: %w", err)
	}
	if ok && s.inRange(own.IP) {
		if own.Expires.Before(now.Add(hold)) {
			own.Expires = now.Add(hold)
			if err := f.Leases.Put(ctx, own); err != nil {
				return nil, fmt.Errorf("put lease: %w", err)
			}
		}
		return own.IP.To4(), nil
	}
	used, err := s.usedAddrs(ctx, mac, now)
	if err != nil {
		return nil, err
	}
	var pick net.IP
	if requested != nil && s.inRange(requested) && !used[ipKey(requested)] && s.assignable(requested) {
		pick = requested.To4()
	} else {
		a, b := binary.BigEndian.Uint32(f.RangeStart), binary.BigEndian.Uint32(f.RangeEnd)
		for v := a; v <= b && v >= a; v++ {
			ip := net.IP(binary.BigEndian.AppendUint32(nil, v))
			if !used[ipKey(ip)] && s.assignable(ip) {
				pick = ip
				break
			}
		}
	}
	if pick == nil {
		return nil, fmt.Errorf("address pool %v-%v is exhausted", f.RangeStart, f.RangeEnd)
	}
	if err := f.Leases.Put(ctx, Lease{MAC: mac, IP: pick, Expires: now.Add(hold)}); err != nil {
		return nil, fmt.Errorf("put lease: %w", err)
	}
	return pick, nil
}

// ackAddr binds want to mac for a lease time, or reports false (NAK).
func (s *ProxyDHCP) ackAddr(ctx context.Context, mac net.HardwareAddr, want net.IP) (bool, error) {
	if want == nil || !s.inRange(want) || !s.assignable(want) {
		return false, nil
	}
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	now := s.cfg.Now()
	used, err := s.usedAddrs(ctx, mac, now)
	if err != nil {
		return false, err
	}
	if used[ipKey(want)] {
		return false, nil
	}
	if err := s.cfg.Full.Leases.Put(ctx, Lease{MAC: mac, IP: want.To4(), Expires: now.Add(s.cfg.Full.LeaseTime)}); err != nil {
		return false, fmt.Errorf("put lease: %w", err)
	}
	return true, nil
}

// release ends mac's lease when it names the leased address.
func (s *ProxyDHCP) release(ctx context.Context, mac net.HardwareAddr, ip net.IP) error {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	l, ok, err := s.cfg.Full.Leases.Get(ctx, mac)
	if err != nil {
		return fmt.Errorf("get lease: %w", err)
	}
	if !ok || !l.IP.Equal(ip) {
		return nil
	}
	l.Expires = s.cfg.Now()
	if err := s.cfg.Full.Leases.Put(ctx, l); err != nil {
		return fmt.Errorf("put lease: %w", err)
	}
	return nil
}

// usedAddrs returns the addresses leased (unexpired) to MACs other than mac.
func (s *ProxyDHCP) usedAddrs(ctx context.Context, mac net.HardwareAddr, now time.Time) (map[[4]byte]bool, error) {
	all, err := s.cfg.Full.Leases.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	used := make(map[[4]byte]bool, len(all))
	for _, l := range all {
		if l.IP.To4() == nil || l.Expired(now) || macEqual(l.MAC, mac) {
			continue
		}
		used[ipKey(l.IP)] = true
	}
	return used, nil
}

func (s *ProxyDHCP) inRange(ip net.IP) bool {
	v := ip.To4()
	if v == nil {
		return false
	}
	x := binary.BigEndian.Uint32(v)
	return x >= binary.BigEndian.Uint32(s.cfg.Full.RangeStart) && x <= binary.BigEndian.Uint32(s.cfg.Full.RangeEnd)
}

// assignable excludes the server, the router and the subnet's network and
// broadcast addresses.
func (s *ProxyDHCP) assignable(ip net.IP) bool {
	v := ip.To4()
	f := &s.cfg.Full
	if v.Equal(s.cfg.ServerIP) || (f.Router != nil && v.Equal(f.Router)) {
		return false
	}
	network := v.Mask(f.Netmask)
	bcast := make(net.IP, 4)
	for i := range bcast {
		bcast[i] = network[i] | ^f.Netmask[i]
	}
	return !v.Equal(network) && !v.Equal(bcast)
}

func ipKey(ip net.IP) [4]byte {
	var k [4]byte
	copy(k[:], ip.To4())
	return k
}

func macEqual(a, b net.HardwareAddr) bool {
	return len(a) == len(b) && string(a) == string(b)
}
