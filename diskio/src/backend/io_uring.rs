//! Why io_uring cannot be used here, told the same way by every io_uring backend.

use std::io;

use crate::error::Error;

use super::sys::memlock_limit;

/// [`Error::Unsupported`] when the environment variable `var` is set to anything non-empty:
/// the switch that makes a backend take its fallback path.
///
/// # Errors
///
/// [`Error::Unsupported`] naming the variable and the backend.
pub fn check_disable_env(var: &str, backend: &str) -> Result<(), Error> {
    if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
        return Err(Error::Unsupported {
            reason: format!(
                "{backend} is turned off by the {var} environment variable; unset it to use \
                 io_uring"
            ),
        });
    }
    Ok(())
}

/// [`Error::Unsupported`] for a failed `io_uring_setup`, with the reason a person can act on
/// (reads `kernel.io_uring_disabled` to tell the cases apart).
pub fn setup_refused(e: &io::Error) -> Error {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    Error::Unsupported {
        reason: explain_setup_error(e, disabled.as_deref().map(str::trim)),
    }
}

/// [`Error::Unsupported`] when the kernel cannot list its io_uring opcodes.
pub fn probe_refused(e: &io::Error) -> Error {
    Error::Unsupported {
        reason: format!(
            "the kernel cannot list its io_uring opcodes ({e}); Linux 5.6 or later is needed"
        ),
    }
}

/// `Ok` when the kernel supports every opcode of `needed` (`(code, name)` pairs), as
/// `supported` tells from the kernel's probe; else [`Error::Unsupported`] naming the missing
/// ones.
///
/// # Errors
///
/// [`Error::Unsupported`].
pub fn check_opcodes(needed: &[(u8, &str)], supported: impl Fn(u8) -> bool) -> Result<(), Error> {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|&&(code, _)| !supported(code))
        .map(|&(_, name)| name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Unsupported {
        reason: format!(
            "the kernel's io_uring lacks {}; Linux 5.6 or later is needed (use the blocking \
             backend here)",
            missing.join(", ")
        ),
    })
}

/// Explains a failed `io_uring_setup`, given the value of `kernel.io_uring_disabled` if known.
pub fn explain_setup_error(e: &io::Error, io_uring_disabled: Option<&str>) -> String {
    match (e.raw_os_error(), io_uring_disabled) {
        (Some(libc::ENOSYS), _) => format!(
            "io_uring_setup is not available ({e}): the kernel is older than 5.1 or built \
             without io_uring; use the blocking backend"
        ),
        (Some(libc::EPERM), Some("2")) => format!(
            "io_uring is disabled on this machine (sysctl kernel.io_uring_disabled = 2, {e}); \
             set it to 0 to use io_uring, or use the blocking backend"
        ),
        (Some(libc::EPERM), Some("1")) => format!(
            "io_uring is restricted to the group in sysctl kernel.io_uring_group \
             (kernel.io_uring_disabled = 1, {e}); add this user to that group, or use the \
             blocking backend"
        ),
        (Some(libc::EPERM), _) => format!(
            "io_uring_setup was refused ({e}): a seccomp profile (container runtimes block \
             io_uring by default) or a security module forbids it; allow io_uring_setup, \
             io_uring_enter and io_uring_register, or use the blocking backend"
        ),
        (Some(libc::ENOMEM), _) => format!(
            "no memory for the ring ({e}): RLIMIT_MEMLOCK is {} on kernels before 5.12; \
             raise `ulimit -l`, use fewer entries, or use the blocking backend",
            memlock_limit()
        ),
        _ => format!("io_uring_setup failed ({e}); use the blocking backend"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_name_the_cause_and_the_way_out() {
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        let r = explain_setup_error(&eperm, Some("2"));
        assert!(r.contains("io_uring_disabled = 2"), "{r}");
        let r = explain_setup_error(&eperm, Some("1"));
        assert!(r.contains("io_uring_group"), "{r}");
        let r = explain_setup_error(&eperm, Some("0"));
        assert!(r.contains("seccomp"), "{r}");
        let r = explain_setup_error(&io::Error::from_raw_os_error(libc::ENOMEM), None);
        assert!(r.contains("RLIMIT_MEMLOCK"), "{r}");
        let r = explain_setup_error(&io::Error::from_raw_os_error(libc::ENOSYS), None);
        assert!(r.contains("5.1"), "{r}");
        let needed = [(1, "NOP"), (2, "FSYNC"), (3, "OPENAT")];
        assert!(check_opcodes(&needed, |_| true).is_ok());
        let Err(Error::Unsupported { reason }) = check_opcodes(&needed, |code| code == 1) else {
            panic!("missing opcodes were accepted");
        };
        assert!(reason.contains("FSYNC, OPENAT"), "{reason}");
    }
}
