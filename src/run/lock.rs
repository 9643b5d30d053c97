//! One run at a time per config: an exclusive `flock` on `<state>/lock`.
//!
//! The kernel drops a `flock` when its holder dies, so a lock left by a killed run is taken
//! over by the next run with no guessing about stale pids. The file holds the holder's pid
//! only so the refusal can name it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

#[derive(Debug, thiserror::Error)]
#[error("another redundo run (pid {pid}) holds the lock {path}")]
pub struct LockHeld {
    pub pid: String,
    pub path: String,
}

/// Held for the life of the value.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// [`RunLock::acquire`], trying again for up to `wait` while another run holds it.
    pub fn acquire_waiting(state_dir: &Path, wait: Duration) -> Result<RunLock> {
        let deadline = Instant::now() + wait;
        loop {
            match RunLock::acquire(state_dir) {
                Err(e) if e.is::<LockHeld>() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    pub fn acquire(state_dir: &Path) -> Result<RunLock> {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("creating state folder {}", state_dir.display()))?;
        let path = state_dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        // SAFETY: flock on a valid, open descriptor has no memory-safety preconditions.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let pid = if pid.is_empty() { "unknown".to_string() } else { pid.to_string() };
            return Err(LockHeld { pid, path: path.display().to_string() }.into());
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "{}", std::process::id())?;
            file.flush()
        };
        write_pid(&mut file).with_context(|| format!("writing lock file {}", path.display()))?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holders_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).err().unwrap();
        let held = err.downcast_ref::<LockHeld>().unwrap();
        assert_eq!(held.pid, std::process::id().to_string());
        drop(first);
        RunLock::acquire(dir.path()).unwrap();
    }
}
