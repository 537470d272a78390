//! The UDP control messages of the offloads: the buffer each message carries them in, reading
//! the `UDP_GRO` segment size the kernel attached to a received message, and writing the
//! `UDP_SEGMENT` size of an outgoing GSO message.
//!
//! All `CMSG_*` pointer arithmetic of the module lives here, bounded by the buffer it was given.

use std::mem;
use std::ptr;

/// Control-message buffer of one message: room for a `UDP_GRO` int or a `UDP_SEGMENT` u16 and
/// some slack, aligned as `cmsghdr` requires.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(super) struct ControlBuf(pub(super) [u8; 64]);

impl ControlBuf {
    pub(super) const EMPTY: ControlBuf = ControlBuf([0; 64]);
}

/// The segment size of a GRO message, from its `SOL_UDP`/`UDP_GRO` control message; 0 if the
/// message is a single datagram.
pub(super) fn gro_segment_size(header: &libc::msghdr) -> usize {
    let control_end = header.msg_control as usize + header.msg_controllen;
    let mut size = 0;
    // SAFETY: `msg_control` and `msg_controllen` describe this message's control buffer, which
    // the kernel filled and set the length of; CMSG_FIRSTHDR/NXTHDR only return headers that lie
    // inside it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(header) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is a non-null header inside the control buffer (see above), aligned
        // because the buffer is and the kernel pads every entry to CMSG_ALIGN.
        let entry = unsafe { &*cmsg };
        // SAFETY: CMSG_DATA only computes an address past the header.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        let data_len = (entry.cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
        let complete = data as usize + mem::size_of::<libc::c_int>() <= control_end;
        if entry.cmsg_level == libc::SOL_UDP
            && entry.cmsg_type == libc::UDP_GRO
            && data_len >= mem::size_of::<libc::c_int>()
            && complete
        {
            // SAFETY: the int lies wholly inside the control buffer (checked just above).
            let value = unsafe { ptr::read_unaligned(data.cast::<libc::c_int>()) };
            size = usize::try_from(value).unwrap_or(0);
        }
        // SAFETY: `header` and `cmsg` are valid as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(header, cmsg) };
    }
    size
}

/// Attaches a `SOL_UDP`/`UDP_SEGMENT` control message of `segment` bytes to `header`.
pub(super) fn write_segment_size(header: &mut libc::msghdr, control: &mut ControlBuf, segment: usize) {
    const VALUE_LEN: libc::c_uint = mem::size_of::<u16>() as libc::c_uint;
    // SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic on a constant.
    let (space, len) = unsafe { (libc::CMSG_SPACE(VALUE_LEN), libc::CMSG_LEN(VALUE_LEN)) };
    header.msg_control = control.0.as_mut_ptr().cast();
    header.msg_controllen = space as _;
    // SAFETY: the control buffer is aligned for `cmsghdr` and longer than `space`, so the first
    // header and its two data bytes lie inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(header);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = len as _;
        // A run's segment is at most one maximal UDP payload, so it fits in u16.
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment as u16);
    }
}
