//! SIGHUP → "reload the cluster file", as a flag the supervisor loop polls.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_signal: libc::c_int) {
    HANGUP.store(true, Ordering::SeqCst);
}

/// Installs the SIGHUP handler (async-signal-safe: it only stores to an atomic).
pub fn install_reload_signal() -> io::Result<()> {
    // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid; the handler
    // only touches an atomic.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_hangup as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGHUP, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether a SIGHUP arrived since the last call.
pub fn take_reload_request() -> bool {
    HANGUP.swap(false, Ordering::SeqCst)
}
