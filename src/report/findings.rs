//! Findings are values, not errors: one damaged file never ends a run. Each command collects
//! them and the exit code is chosen once, at the end, from what was found.

use serde::Serialize;

use crate::report::exit::Exit;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    // Damage: exit 1.
    Corrupt,
    Missing,
    WrongSize,
    SourceRot,
    ForeignContent,
    NotIndependent,
    NoMajority,
    NoGoodCopy,
    ManifestOverruled,
    BelowMinCopies,
    KnownDamage,
    ReplicaMissing,
    ReplicaDefective,
    ReplicaDivergent,
    /// The record's block digests disagree with the content its whole digest proves.
    RecordDefective,
    // Configuration: exit 2.
    ForeignTarget,
    // Operational: exit 3.
    TargetUnreachable,
    WriteFailed,
    ReadFailed,
    SourceChanging,
    PruneRefused,
}

impl ProblemKind {
    pub fn exit(self) -> Exit {
        use ProblemKind::*;
        match self {
            Corrupt | Missing | WrongSize | SourceRot | ForeignContent | NotIndependent
            | NoMajority | NoGoodCopy | KnownDamage | ManifestOverruled | BelowMinCopies
            | ReplicaMissing | ReplicaDefective | ReplicaDivergent | RecordDefective => {
                Exit::Damage
            }
            ForeignTarget => Exit::Usage,
            TargetUnreachable | WriteFailed | ReadFailed | SourceChanging | PruneRefused => {
                Exit::Operational
            }
        }
    }

    pub fn label(self) -> &'static str {
        use ProblemKind::*;
        match self {
            Corrupt => "CORRUPT",
            Missing => "MISSING",
            WrongSize => "WRONG SIZE",
            SourceRot => "SOURCE ROT",
            ForeignContent => "FOREIGN CONTENT",
            NotIndependent => "NOT INDEPENDENT",
            NoMajority => "NO MAJORITY",
            NoGoodCopy => "NO GOOD COPY",
            ManifestOverruled => "MANIFEST OVERRULED",
            BelowMinCopies => "TOO FEW COPIES",
            KnownDamage => "KNOWN DAMAGE",
            ReplicaMissing => "MANIFEST MISSING",
            ReplicaDefective => "MANIFEST DEFECTIVE",
            ReplicaDivergent => "MANIFEST DIVERGENT",
            RecordDefective => "RECORD DEFECTIVE",
            ForeignTarget => "FOREIGN TARGET",
            TargetUnreachable => "UNREACHABLE",
            WriteFailed => "WRITE FAILED",
            ReadFailed => "READ FAILED",
            SourceChanging => "SOURCE CHANGING",
            PruneRefused => "PRUNE REFUSED",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Not damage: will be settled by the next backup.
    Pending,
    /// A file on a target that the manifest does not know; reported, never deleted.
    Unknown,
    /// Not copied: a symlink, a special file, an unusable name.
    Skipped,
    /// Something redundo did that a person may want to know: healed, quarantined, pruned.
    Done,
}

impl NoticeKind {
    pub fn label(self) -> &'static str {
        match self {
            NoticeKind::Pending => "pending",
            NoticeKind::Unknown => "unknown",
            NoticeKind::Skipped => "skipped",
            NoticeKind::Done => "done",
        }
    }
}

/// One finding about a file on a copy, a copy, or a manifest replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding<K> {
    pub kind: K,
    /// "source" or a target name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub detail: String,
}

pub type Problem = Finding<ProblemKind>;
pub type Notice = Finding<NoticeKind>;

impl<K> Finding<K> {
    pub fn new(kind: K, copy: Option<&str>, path: Option<&str>, detail: impl Into<String>) -> Self {
        Finding {
            kind,
            copy: copy.map(str::to_string),
            path: path.map(str::to_string),
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Findings {
    pub problems: Vec<Problem>,
    pub notices: Vec<Notice>,
}

impl Findings {
    pub fn problem(
        &mut self,
        kind: ProblemKind,
        copy: Option<&str>,
        path: Option<&str>,
        detail: impl Into<String>,
    ) {
        self.problems.push(Finding::new(kind, copy, path, detail));
    }

    pub fn notice(
        &mut self,
        kind: NoticeKind,
        copy: Option<&str>,
        path: Option<&str>,
        detail: impl Into<String>,
    ) {
        self.notices.push(Finding::new(kind, copy, path, detail));
    }

    pub fn extend(&mut self, other: Findings) {
        self.problems.extend(other.problems);
        self.notices.extend(other.notices);
    }

    pub fn exit(&self) -> Exit {
        self.problems.iter().map(|p| p.kind.exit()).max().unwrap_or(Exit::Healthy)
    }

    /// Problems and notices in a stable order: by path, then copy.
    pub fn sort(&mut self) {
        self.problems.sort_by(|a, b| (&a.path, &a.copy).cmp(&(&b.path, &b.copy)));
        self.notices.sort_by(|a, b| (&a.path, &a.copy).cmp(&(&b.path, &b.copy)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_is_the_highest_code_among_problems() {
        let mut f = Findings::default();
        assert_eq!(f.exit(), Exit::Healthy);
        f.notice(NoticeKind::Pending, Some("source"), Some("a"), "changed");
        assert_eq!(f.exit(), Exit::Healthy);
        f.problem(ProblemKind::Corrupt, Some("nas"), Some("a"), "x");
        assert_eq!(f.exit(), Exit::Damage);
        f.problem(ProblemKind::TargetUnreachable, Some("usb"), None, "gone");
        assert_eq!(f.exit(), Exit::Operational);
    }
}
