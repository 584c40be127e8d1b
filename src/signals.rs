//! SIGINT and SIGTERM for `statten train`: the first asks the training loop to stop after its
//! current step (it writes a checkpoint with the position in the epoch and returns); a second
//! one exits at once with status 130 (SIGINT) or 143 (SIGTERM).
//!
//! Slurm sends SIGTERM before it preempts or times out a job, so a cluster run ends with a
//! checkpoint that `--resume` continues exactly.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Install the handlers (once) and return the flag they set.
pub fn install() -> Arc<AtomicBool> {
    let flag = STOP
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    #[cfg(unix)]
    // SAFETY: a zeroed sigaction is a valid value; the handler does only async-signal-safe work (atomics, write(2), _exit(2)), and the pointers passed live through the calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
    flag
}

/// The signal that asked for the stop (0 = none).
pub fn received() -> i32 {
    SIGNAL.load(Ordering::SeqCst)
}

/// The exit status for a run stopped by `signal`: 128 + its number, as a shell reports it.
pub fn exit_status(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

#[cfg(unix)]
extern "C" fn handler(sig: libc::c_int) {
    // Only async-signal-safe calls here: atomics, write(2), _exit(2).
    let Some(flag) = STOP.get() else {
        // SAFETY: _exit(2) is async-signal-safe.
        unsafe { libc::_exit(128 + sig) }
    };
    if flag.swap(true, Ordering::SeqCst) {
        let msg = b"\nsecond signal: exiting now, without a checkpoint of this epoch\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; `msg` is a static buffer of `msg.len()` bytes.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(128 + sig);
        }
    }
    SIGNAL.store(sig, Ordering::SeqCst);
    let msg = b"\nstopping after this step and writing a checkpoint (again to exit at once)\n";
    // SAFETY: write(2) is async-signal-safe; `msg` is a static buffer of `msg.len()` bytes.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
    }
}
