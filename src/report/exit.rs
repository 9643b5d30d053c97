//! The exit codes, the one thing every command's caller branches on.
//!
//! 0 healthy or done; 1 damage or unrepaired problems found; 2 usage or configuration error;
//! 3 operational failure (a target unreachable or unwritable, an I/O error, the lock held).
//! When a run meets several, the highest wins: an operational failure means the check was
//! incomplete, so it outranks the damage it did find.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    Healthy = 0,
    Damage = 1,
    Usage = 2,
    Operational = 3,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit code for an error that ended a run early.
    pub fn for_error(err: &anyhow::Error) -> Exit {
        if err.chain().any(|cause| cause.downcast_ref::<UsageError>().is_some()) {
            Exit::Usage
        } else if err.chain().any(|cause| cause.downcast_ref::<DamageError>().is_some()) {
            Exit::Damage
        } else {
            Exit::Operational
        }
    }
}

/// Damage that ends a run which cannot report findings (`cat` mid-stream): exit 1.
#[derive(Debug)]
pub struct DamageError(pub String);

impl fmt::Display for DamageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DamageError {}

/// A mistake in the command line or the configuration: exit 2. The message names the flag,
/// key, file or target at fault.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for returning a usage error from a function that returns `anyhow::Result`.
pub fn usage<T>(message: impl Into<String>) -> anyhow::Result<T> {
    Err(UsageError(message.into()).into())
}

pub const EXIT_CODES_HELP: &str = "\
Exit codes (the same for every command):
  0  all healthy / done
  1  damage or unrepaired problems found (a copy corrupt or missing, no majority,
     fewer good copies than min_copies, source rot, a defective record)
  2  usage or configuration error
  3  operational failure (a target unreachable or unwritable, I/O error,
     lock held by another run)
When several apply, the highest code wins.";

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn usage_error_anywhere_in_the_chain_means_exit_2() {
        let err: anyhow::Error = UsageError("bad key".into()).into();
        let err = Err::<(), _>(err).context("loading config").unwrap_err();
        assert_eq!(Exit::for_error(&err), Exit::Usage);
    }

    #[test]
    fn any_other_error_is_operational() {
        let err = anyhow::anyhow!("disk on fire");
        assert_eq!(Exit::for_error(&err), Exit::Operational);
    }
}
