//! Socket calls std does not offer, for tests that misbehave on purpose: a connection from
//! another loopback source address, and a close with a reset instead of a FIN.

use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd};

#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: [u8; 2],
    addr: [u8; 4],
    zero: [u8; 8],
}

#[repr(C)]
struct Linger {
    l_onoff: i32,
    l_linger: i32,
}

unsafe extern "C" {
    fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
    fn close(fd: i32) -> i32;
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const Linger, len: u32) -> i32;
}

/// A TCP connection to 127.0.0.1:`port` from the source address `from` (another loopback
/// address, such as 127.0.0.2): std cannot bind a socket before connecting it, so this goes
/// through the C library.
pub fn connect_from(from: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    const AF_INET: i32 = 2;
    const SOCK_STREAM: i32 = 1;
    const SOCK_CLOEXEC: i32 = 0o2000000;
    let sockaddr = |addr: [u8; 4], port: u16| SockaddrIn {
        family: AF_INET as u16,
        port: port.to_be_bytes(),
        addr,
        zero: [0; 8],
    };
    let len = std::mem::size_of::<SockaddrIn>() as u32;
    // SAFETY: plain socket calls on a descriptor this function owns, with valid addresses.
    unsafe {
        let fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if bind(fd, &sockaddr(from, 0), len) != 0
            || connect(fd, &sockaddr([127, 0, 0, 1], port), len) != 0
        {
            let e = std::io::Error::last_os_error();
            close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// Closes `stream` with a TCP reset (SO_LINGER 0) instead of a FIN.
pub fn reset(stream: TcpStream) {
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    let linger = Linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized option value.
    let set = unsafe {
        setsockopt(
            stream.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            &linger,
            std::mem::size_of::<Linger>() as u32,
        ) == 0
    };
    drop(stream);
    assert!(set, "SO_LINGER could not be set: the close was not a reset");
}
