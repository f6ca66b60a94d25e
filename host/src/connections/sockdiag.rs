//! Listening sockets from netlink sock_diag (`SOCK_DIAG_BY_FAMILY` dumps),
//! so the role of connections older than the daemon can be inferred: a
//! connection whose local port the host listens on is a server.

use std::collections::HashSet;
use std::io;

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
const TCP_CLOSE: u32 = 7;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagSockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: InetDiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// Ports the host listens on: TCP listeners and bound, unconnected UDP.
#[derive(Clone, Debug, Default)]
pub struct Listening {
    tcp: HashSet<u16>,
    udp: HashSet<u16>,
}

impl Listening {
    /// A view from known ports (tests, or another source of truth).
    pub fn from_ports(tcp: impl IntoIterator<Item = u16>, udp: impl IntoIterator<Item = u16>) -> Self {
        Self { tcp: tcp.into_iter().collect(), udp: udp.into_iter().collect() }
    }

    /// Is `port` a listening port for this socket type (SOCK_STREAM = 1, SOCK_DGRAM = 2)?
    pub fn contains(&self, transport: crate::capture::Transport, port: u16) -> bool {
        match transport {
            crate::capture::Transport::Stream => self.tcp.contains(&port),
            crate::capture::Transport::Datagram => self.udp.contains(&port),
            crate::capture::Transport::Other => false,
        }
    }

    /// Number of ports known.
    pub fn len(&self) -> usize {
        self.tcp.len() + self.udp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Dump the listening sockets of this network namespace.
pub fn listening() -> io::Result<Listening> {
    let mut out = Listening::default();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for (proto, states, set) in [
            (libc::IPPROTO_TCP as u8, 1u32 << TCP_LISTEN, &mut out.tcp),
            (libc::IPPROTO_UDP as u8, 1u32 << TCP_CLOSE, &mut out.udp),
        ] {
            dump(family, proto, states, |msg| {
                // Unconnected (listening) sockets have no peer port.
                if msg.id.dport == 0 {
                    set.insert(u16::from_be(msg.id.sport));
                }
            })?;
        }
    }
    Ok(out)
}

fn dump(family: u8, protocol: u8, states: u32, mut each: impl FnMut(&InetDiagMsg)) -> io::Result<()> {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let _close = CloseOnDrop(fd);
    // The dump runs on the daemon's main loop: a reply that never ends
    // must not hold the loop (and capture behind it) without limit. Past
    // the timeout the dump fails, is logged, and the last view stays.
    let timeout = libc::timeval { tv_sec: 1, tv_usec: 0 };
    // SAFETY: a valid fd and a timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    #[repr(C)]
    struct Request {
        hdr: NlMsgHdr,
        req: InetDiagReqV2,
    }
    let req = Request {
        hdr: NlMsgHdr {
            len: std::mem::size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST | NLM_F_DUMP,
            seq: 1,
            pid: 0,
        },
        req: InetDiagReqV2 { family, protocol, states, ..Default::default() },
    };
    // SAFETY: sending a fully initialised repr(C) struct.
    let sent = unsafe { libc::send(fd, (&req as *const Request).cast(), std::mem::size_of::<Request>(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: receiving into a buffer we own.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut off = 0usize;
        let n = n as usize;
        while off + std::mem::size_of::<NlMsgHdr>() <= n {
            // SAFETY: in bounds; NlMsgHdr is POD.
            let hdr: NlMsgHdr = unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let len = hdr.len as usize;
            if len < std::mem::size_of::<NlMsgHdr>() || off + len > n {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
            }
            match hdr.kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno: i32 = unsafe {
                        std::ptr::read_unaligned(buf[off + std::mem::size_of::<NlMsgHdr>()..].as_ptr().cast())
                    };
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                SOCK_DIAG_BY_FAMILY => {
                    let body = off + std::mem::size_of::<NlMsgHdr>();
                    if body + std::mem::size_of::<InetDiagMsg>() <= off + len {
                        // SAFETY: in bounds; POD.
                        let msg: InetDiagMsg = unsafe { std::ptr::read_unaligned(buf[body..].as_ptr().cast()) };
                        each(&msg);
                    }
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

struct CloseOnDrop(i32);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sees_a_listener_of_ours() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let uport = u.local_addr().unwrap().port();
        let seen = super::listening().unwrap();
        assert!(seen.contains(crate::capture::Transport::Stream, port), "tcp {port}");
        assert!(seen.contains(crate::capture::Transport::Datagram, uport), "udp {uport}");
    }
}
