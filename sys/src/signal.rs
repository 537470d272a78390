//! The process's stop signals.
//!
//! [`install_stop_handlers`] makes SIGTERM and SIGINT raise one process-wide flag, read with
//! [`stop_requested`]. The handler only stores to a static atomic (async-signal-safe) and is
//! installed with `SA_RESETHAND`, so a second signal falls through to the default action and
//! kills a process that is stuck.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Raised by the signal handler.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// Installs the stop handler for SIGTERM and SIGINT, for the whole process. Installing it again
/// is harmless (it re-arms a handler a first signal has reset).
pub fn install_stop_handlers() -> io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: an all-zero `sigaction` is a valid starting value; the handler only does
        // an atomic store, which is async-signal-safe; the pointers passed are valid.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Whether a stop signal has arrived since the handlers were installed.
pub fn stop_requested() -> bool {
    SIGNALLED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigterm_sets_the_flag() {
        install_stop_handlers().unwrap();
        assert!(!stop_requested());
        // SAFETY: raising a signal whose handler was just installed is sound.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        assert!(stop_requested());
    }
}
