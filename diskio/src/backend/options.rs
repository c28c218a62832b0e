//! The checks of backend options, with one wording for every backend.

use std::fmt::Display;
use std::time::Duration;

use crate::buf::BUF_ALIGN_MAX;
use crate::error::{Context, Error, Op, Result};

/// Longest spin or wait a backend option may ask for.
pub const WAIT_MAX: Duration = Duration::from_millis(100);

fn invalid(reason: String) -> Error {
    Error::InvalidInput {
        ctx: Context::new(Op::Setup),
        reason,
    }
}

/// `name` must lie in `min..=max`.
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the option, its range and the value.
pub fn check_within<T: PartialOrd + Display>(name: &str, value: T, min: T, max: T) -> Result<()> {
    if value < min || value > max {
        return Err(invalid(format!(
            "{name} must be {min}..={max}, not {value}"
        )));
    }
    Ok(())
}

/// `name` must be at most `max`.
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the option, its limit and the value.
pub fn check_at_most<T: PartialOrd + Display>(name: &str, value: T, max: T) -> Result<()> {
    if value > max {
        return Err(invalid(format!(
            "{name} must be at most {max}, not {value}"
        )));
    }
    Ok(())
}

/// The options every backend has: the alignment of the buffers it hands out (a power of two in
/// 512..=1 MiB) and its spins and waits, each named with its length (at most [`WAIT_MAX`]).
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the first option out of range.
pub fn check_common(alignment: usize, waits: &[(&str, Duration)]) -> Result<()> {
    if !alignment.is_power_of_two() || !(512..=BUF_ALIGN_MAX).contains(&alignment) {
        return Err(invalid(format!(
            "alignment must be a power of two in 512..=1 MiB, not {alignment}"
        )));
    }
    for &(name, wait) in waits {
        if wait > WAIT_MAX {
            return Err(invalid(format!(
                "{name} must be at most 100 ms, not {wait:?}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_option_the_range_and_the_value() {
        let e = check_within("threads", 0, 1, 1024).unwrap_err().to_string();
        assert!(e.contains("threads must be 1..=1024, not 0"), "{e}");
        let e = check_at_most("fixed_buffers", 9, 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fixed_buffers must be at most 8, not 9"), "{e}");
        let e = check_common(3000, &[]).unwrap_err().to_string();
        assert!(e.contains("alignment must be a power of two"), "{e}");
        let spin = Duration::from_millis(101);
        let e = check_common(4096, &[("spin", spin)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("spin must be at most 100 ms"), "{e}");
        assert!(check_common(4096, &[("spin", WAIT_MAX)]).is_ok());
    }
}
