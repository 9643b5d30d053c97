//! When a WebHDFS target has stopped answering for this run: a few failures in a row, each
//! after its retries, of the NameNode or of the DataNodes it sends the data to. From then on
//! every request fails at once with [`TargetDown`](crate::store::TargetDown), so the run
//! spends no retry cycle per remaining file (about 8 s each with the default retries), and
//! the run layer, which asks [`Store::down`](crate::store::Store::down), stops giving the
//! target work and reports it once.
//!
//! The two sides are counted apart: a DataNode that refuses every upload sits behind a
//! NameNode that answers every metadata request, and those answers must not hide it.

use std::io;
use std::sync::Mutex;

/// Failures in a row, on one side, after which the target is given up for the run.
pub(super) const TRIP_AFTER: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    NameNode,
    DataNode,
}

#[derive(Default)]
pub(super) struct Breaker {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    namenode: u32,
    datanode: u32,
    /// Why the target was given up, once it was.
    tripped: Option<String>,
}

impl Breaker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails at once when the target was given up.
    pub(super) fn check(&self) -> io::Result<()> {
        match &self.state().tripped {
            Some(cause) => Err(crate::store::down_error(cause)),
            None => Ok(()),
        }
    }

    /// `side` answered (anything but a 5xx): its run of failures is over.
    pub(super) fn answered(&self, side: Side) {
        let mut state = self.state();
        match side {
            Side::NameNode => state.namenode = 0,
            Side::DataNode => state.datanode = 0,
        }
    }

    /// `side` failed for good (a connection error, a timeout or a 5xx, after the retries).
    pub(super) fn failed(&self, side: Side, cause: &str) {
        let mut state = self.state();
        let count = match side {
            Side::NameNode => &mut state.namenode,
            Side::DataNode => &mut state.datanode,
        };
        *count += 1;
        let count = *count;
        if count >= TRIP_AFTER && state.tripped.is_none() {
            let who = match side {
                Side::NameNode => "the NameNode",
                Side::DataNode => "the DataNodes",
            };
            state.tripped = Some(format!(
                "{who} failed {count} times in a row, each after its retries; the last: {cause}"
            ));
        }
    }

    /// Why the target was given up, if it was.
    /// Whether the last request to a DataNode failed: a dead DataNode, which only requests
    /// that reach it again can tell the breaker about.
    pub(super) fn datanodes_failing(&self) -> bool {
        self.state().datanode > 0
    }

    pub(super) fn cause(&self) -> Option<String> {
        self.state().tripped.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy)]
    enum Event {
        Ok(Side),
        Fail(Side),
    }
    use Event::*;
    use Side::*;

    #[test]
    fn trips_after_three_failures_in_a_row_on_one_side() {
        let cases: &[(&str, &[Event], Option<&str>)] = &[
            ("nothing happened", &[], None),
            ("two failures", &[Fail(DataNode), Fail(DataNode)], None),
            ("three DataNode failures", &[Fail(DataNode); 3], Some("the DataNodes failed 3")),
            ("three NameNode failures", &[Fail(NameNode); 3], Some("the NameNode failed 3")),
            (
                "NameNode answers in between do not hide a dead DataNode",
                &[Fail(DataNode), Ok(NameNode), Fail(DataNode), Ok(NameNode), Fail(DataNode)],
                Some("the DataNodes failed 3"),
            ),
            (
                "a DataNode answer ends the run of failures",
                &[Fail(DataNode), Fail(DataNode), Ok(DataNode), Fail(DataNode), Fail(DataNode)],
                None,
            ),
            (
                "failures on both sides are counted apart",
                &[Fail(NameNode), Fail(DataNode), Fail(NameNode), Fail(DataNode)],
                None,
            ),
            (
                "once given up, answers change nothing",
                &[Fail(NameNode), Fail(NameNode), Fail(NameNode), Ok(NameNode), Ok(DataNode)],
                Some("the NameNode failed 3"),
            ),
        ];
        for (what, events, tripped) in cases {
            let breaker = Breaker::default();
            for event in *events {
                match *event {
                    Ok(side) => breaker.answered(side),
                    Fail(side) => breaker.failed(side, "connection refused"),
                }
            }
            match tripped {
                None => {
                    assert_eq!(breaker.cause(), None, "{what}");
                    assert!(breaker.check().is_ok(), "{what}");
                }
                Some(start) => {
                    let cause = breaker.cause().unwrap_or_else(|| panic!("{what}: not tripped"));
                    assert!(cause.starts_with(start), "{what}: {cause}");
                    assert!(cause.ends_with("the last: connection refused"), "{what}: {cause}");
                    let e = breaker.check().unwrap_err();
                    assert!(crate::store::is_down(&e), "{what}: {e}");
                }
            }
        }
    }
}
