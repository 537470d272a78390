//! TCP retransmission counts from the kernel (`getsockopt(TCP_INFO)`).

use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Segments the kernel retransmitted on `socket` since it opened (`tcpi_total_retrans`), or
/// `None` if the kernel would not say.
pub fn total_retransmits(socket: &TcpStream) -> Option<u64> {
    // SAFETY: tcp_info is plain old data; all-zero bytes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the fd is a live socket owned by `socket`; the pointer and length describe `info`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(u64::from(info.tcpi_total_retrans))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_fresh_loopback_connection_has_no_retransmits() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(total_retransmits(&client), Some(0));
    }
}
