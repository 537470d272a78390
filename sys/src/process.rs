//! Starting long-lived processes (the controller's daemons; the lab's controllers, etcd, charon)
//! so they outlive the command that started them and hold nothing of its.
//!
//! A detached process gets a process group of its own (a Ctrl-C at the operator's terminal
//! does not reach it), and none of the descriptors its starter holds without close-on-exec. A
//! `flock` lock around `braid lab up` or `braid up`, or a CI runner's pipe, would otherwise be
//! held by every daemon for its whole life (daemons outlive a controller): a lock never
//! released, a pipe never at end of file.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// [`Detach::detached`] for [`Command`].
pub trait Detach {
    /// Starts the process in a process group of its own, with only its standard streams and
    /// the descriptors it opens itself.
    fn detached(&mut self) -> &mut Self;
}

impl Detach for Command {
    fn detached(&mut self) -> &mut Self {
        self.process_group(0);
        // SAFETY: the hook runs between fork and exec and makes one async-signal-safe system
        // call, close_range(2) marking descriptors 3 and up close-on-exec (std's own already
        // are, so its exec-error pipe still works); it touches only the child's descriptor
        // table. A kernel before 5.11 refuses the flag, and the process starts as it did
        // before this hook existed.
        unsafe {
            self.pre_exec(|| {
                libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int);
                Ok(())
            })
        }
    }
}
