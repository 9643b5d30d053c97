//! The manifest: what every copy should hold, and the choice among its replicas.
//!
//! On disk a replica is one header line, `redundo-manifest <version> <digest>`, then the body
//! as JSON. From format 3 on the digest covers the header's first two fields as well as the
//! body (`blake3("redundo-manifest 3\n" + body)`; formats 1 and 2 cover the body only), so a
//! flipped version number is caught as damage like any other flipped bit, and only a replica
//! that checks is believed to come from a newer redundo. The digest makes a torn or rotten
//! replica detectable before a byte of it is trusted; every path in the body is a validated [`RelPath`] and every block
//! list must add up to the file size, so a crafted replica is rejected rather than obeyed.
//!
//! An entry may carry `pending` versions: a backup records the new content it is about to
//! rename into place *before* it does so, which is what lets `verify` call a copy that a killed
//! run left half-updated "pending" instead of "corrupt" (see `commands::backup`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::record::digest::{BLOCK_SIZE, Digest, FileDigest, block_count};
use crate::record::hdfs_checksum::HdfsChecksum;
use crate::record::relpath::RelPath;
use crate::record::s3_etag::S3Etag;
use crate::record::stat::FileStat;

/// 2 added `source` to file versions; 3 added `run_id` and put the version under the digest;
/// 4 added `folders`, `symlinks` and S3 `sha256`s. Older replicas are read as they are.
pub const FORMAT_VERSION: u32 = 4;

/// A file changed less than this before its read began may change again within the same
/// timestamp tick (2 s on FAT, 1 s on many NAS mounts) without its stat showing it.
const RACY_WINDOW_NS: i64 = 2_000_000_000;
/// No replica above this generation is believed, and no run commits past it: one commit adds
/// exactly one, so a real set never comes near it.
pub const MAX_GENERATION: u64 = 1 << 53;
const MAGIC: &str = "redundo-manifest";

/// The file name of a replica inside a `.redundo/` folder.
pub const REPLICA_NAME: &str = "manifest";

/// The digests in `b3sum --check` format, beside each target's replica.
pub const B3SUMS_NAME: &str = "B3SUMS";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Names the backup set (one config's source and targets), chosen at its first backup, so
    /// a target folder shared by two configs is noticed instead of overwritten.
    #[serde(default)]
    pub set_id: String,
    pub generation: u64,
    /// RFC 3339, UTC.
    pub written_at: String,
    /// Names the run that wrote this generation, so two commits never look alike (a run that
    /// could not see a target and a killed run's partial write may reach the same generation).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// Set when this record holds the same content as an earlier generation (the record a
    /// backup writes before its renames, which only adds pending versions; a commit that
    /// changed no file's content): that generation. It is the number users are shown, and
    /// versions kept later are filed under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interim_of: Option<u64>,
    pub block_size: u64,
    #[serde(deserialize_with = "unique_paths")]
    pub files: BTreeMap<RelPath, Entry>,
    /// Every folder of the source below its root, with its mtime, so that empty folders and
    /// folder mtimes come back too (format 4 on).
    #[serde(
        default,
        deserialize_with = "unique_paths",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub folders: BTreeMap<RelPath, FolderRecord>,
    /// Every symlink of the source, with what it points at, as text: never followed. Kept on
    /// the targets that hold symlinks, and by this record on the others (format 4 on).
    #[serde(
        default,
        deserialize_with = "unique_paths",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub symlinks: BTreeMap<RelPath, String>,
}

/// A folder of the source as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderRecord {
    pub mtime_ns: i64,
}

/// How two manifests' contents differ, counted in files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub new: usize,
    pub changed: usize,
    pub deleted: usize,
}

/// One recorded content of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileVersion {
    pub size: u64,
    pub mtime_ns: i64,
    pub blake3: Digest,
    /// One digest per 1 MiB block; empty when the file has at most one block, whose digest is
    /// then `blake3` itself (this keeps a manifest of many small files small).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Digest>,
    /// HDFS's own checksum of this content, for the HDFS block sizes of the WebHDFS targets
    /// (lets `verify --fast` check an HDFS copy without reading it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hdfs: Vec<HdfsChecksum>,
    /// The S3 ETag of this content, for the part sizes of the S3 targets (lets `verify
    /// --fast` check an S3 copy with a HEAD).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub s3: Vec<S3Etag>,
    /// What the source file's stat said when this version was read from it, beyond size and
    /// mtime; `None` in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStat>,
}

/// The source file's inode change time and inode number at the read: user space can put an
/// mtime back, but not these, so together with size and mtime they say "unchanged since the
/// backup". The device is left out: it can change across reboots while the file does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceStat {
    pub ctime_ns: i64,
    pub ino: u64,
    /// The file had changed within [`RACY_WINDOW_NS`] of the read, so a change in the same
    /// tick could hide behind an unchanged stat (git's "racy clean"): the next backup
    /// re-reads it, and a digest that differs is a change, never rot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub racy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FlatEntry", into = "FlatEntry")]
pub struct Entry {
    pub current: FileVersion,
    /// Contents a backup has staged on the targets and is renaming into place. More than one
    /// when runs were killed in that window and the file changed again in between; cleared
    /// only by a manifest written after every rename is durable.
    pub pending: Vec<FileVersion>,
}

/// An entry as stored: the current version's fields inline, so the common case is compact.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatEntry {
    size: u64,
    mtime_ns: i64,
    blake3: Digest,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    blocks: Vec<Digest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hdfs: Vec<HdfsChecksum>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    s3: Vec<S3Etag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<SourceStat>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<FileVersion>,
}

impl From<FlatEntry> for Entry {
    fn from(flat: FlatEntry) -> Entry {
        let FlatEntry { size, mtime_ns, blake3, blocks, hdfs, s3, source, pending } = flat;
        Entry { current: FileVersion { size, mtime_ns, blake3, blocks, hdfs, s3, source }, pending }
    }
}

impl From<Entry> for FlatEntry {
    fn from(entry: Entry) -> FlatEntry {
        let FileVersion { size, mtime_ns, blake3, blocks, hdfs, s3, source } = entry.current;
        FlatEntry { size, mtime_ns, blake3, blocks, hdfs, s3, source, pending: entry.pending }
    }
}

impl FileVersion {
    pub fn new(size: u64, mtime_ns: i64, digest: FileDigest) -> FileVersion {
        FileVersion {
            size,
            mtime_ns,
            blake3: digest.whole,
            blocks: Vec::new(),
            hdfs: digest.hdfs,
            s3: digest.s3,
            source: None,
        }
        .with_blocks(digest.blocks)
    }

    /// This version with `blocks`, one digest per block as hashed, as its block list (kept
    /// empty for a file of at most one block, whose one block digest is `blake3`).
    pub fn with_blocks(mut self, blocks: Vec<Digest>) -> FileVersion {
        self.blocks = if blocks.len() > 1 { blocks } else { Vec::new() };
        self
    }

    /// The blocks whose recorded digest differs from the one hashed from a copy, given the
    /// copy's whole digest, size and block digests. Only a copy that holds this version whole
    /// (same digest, same size) can speak against the record's blocks: empty when it does not,
    /// as then the copy is in question, not the record; empty too when every block agrees.
    pub fn blocks_differing(&self, whole: Digest, size: u64, blocks: &[Digest]) -> Vec<usize> {
        if whole != self.blake3 || size != self.size {
            return Vec::new();
        }
        let count = block_count(self.size).max(blocks.len());
        (0..count).filter(|&i| self.block_digest(i) != blocks.get(i).copied()).collect()
    }

    /// This version as read from the source with `stat`, the read having begun at
    /// `read_started_ns`: keeps the stat fields that say later whether the file is unchanged.
    pub fn read_from(self, stat: &FileStat, read_started_ns: i64) -> FileVersion {
        let racy = stat.mtime_ns.max(stat.ctime_ns) > read_started_ns - RACY_WINDOW_NS;
        self.with_source(stat, racy)
    }

    /// Keeps `stat`'s ctime and inode without a read, for a record that predates them: its
    /// size and mtime were trusted alone until now.
    pub fn adopt_source(self, stat: &FileStat) -> FileVersion {
        self.with_source(stat, false)
    }

    fn with_source(mut self, stat: &FileStat, racy: bool) -> FileVersion {
        self.source =
            stat.file.map(|file| SourceStat { ctime_ns: stat.ctime_ns, ino: file.ino, racy });
        self
    }

    /// Whether a source file with `stat` is provably the one this version was read from:
    /// same size, mtime, ctime and inode (the last two where they were recorded).
    pub fn source_unchanged(&self, stat: &FileStat) -> bool {
        let same_source = match (self.source, stat.file) {
            (Some(recorded), Some(file)) => {
                recorded.ctime_ns == stat.ctime_ns && recorded.ino == file.ino
            }
            _ => true,
        };
        self.same_stat(stat.size, stat.mtime_ns) && same_source
    }

    /// Whether a source file whose size and mtime match must still be read again before the
    /// record can speak for it: it was racy when read, or its ctime or inode moved (a chmod, a
    /// rewrite with the mtime put back, a save through a new file).
    pub fn must_recheck(&self, stat: &FileStat) -> bool {
        self.source.is_some_and(|s| s.racy) || !self.source_unchanged(stat)
    }

    /// The recorded digest of block `index`.
    pub fn block_digest(&self, index: usize) -> Option<Digest> {
        if self.blocks.is_empty() {
            (index < block_count(self.size)).then_some(self.blake3)
        } else {
            self.blocks.get(index).copied()
        }
    }

    /// Whether a copy with this stat, on a kind that keeps mtimes to `granularity_ns`, looks
    /// like this version (copies are written with the source's mtime).
    pub fn held_by(&self, stat: FileStat, granularity_ns: i64) -> bool {
        let truncated = self.mtime_ns - self.mtime_ns.rem_euclid(granularity_ns.max(1));
        self.size == stat.size && stat.mtime_ns == truncated
    }

    pub fn same_stat(&self, size: u64, mtime_ns: i64) -> bool {
        self.size == size && self.mtime_ns == mtime_ns
    }

    fn check(&self, path: &RelPath) -> Result<(), String> {
        let expected = block_count(self.size);
        let stored = if self.blocks.is_empty() { expected.min(1) } else { self.blocks.len() };
        if stored != expected || (self.blocks.len() == 1) {
            return Err(format!(
                "entry {path}: {} block digests for {} bytes (expected {expected})",
                self.blocks.len(),
                self.size
            ));
        }
        Ok(())
    }
}

impl Manifest {
    /// The generation whose content this one records: its own, or the one it is an interim of.
    pub fn content_generation(&self) -> u64 {
        self.interim_of.unwrap_or(self.generation)
    }

    /// Whether every file's current version is the same content in both (pending versions
    /// and source stats aside).
    pub fn same_content(&self, other: &Manifest) -> bool {
        self.symlinks == other.symlinks
            && self.folders.keys().eq(other.folders.keys())
            && self.files.len() == other.files.len()
            && self.files.iter().zip(&other.files).all(|((p, e), (q, f))| {
                p == q && e.current.blake3 == f.current.blake3 && e.current.size == f.current.size
            })
    }

    /// What changed from `base` to this one, by content: files only here (new), in both with
    /// other content (changed), and only in `base` (deleted).
    pub fn changes_from(&self, base: &Manifest) -> Changes {
        let mut changes = Changes::default();
        for (path, entry) in &self.files {
            match base.files.get(path) {
                None => changes.new += 1,
                Some(old)
                    if old.current.blake3 != entry.current.blake3
                        || old.current.size != entry.current.size =>
                {
                    changes.changed += 1
                }
                Some(_) => {}
            }
        }
        changes.deleted = base.files.keys().filter(|p| !self.files.contains_key(*p)).count();
        changes
    }

    /// The sum of the recorded files' sizes.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|e| e.current.size).sum()
    }

    /// This manifest as the record of its content generation: what `restore --generation`
    /// reads for the versions kept under it.
    pub fn as_committed(&self) -> Manifest {
        let mut committed = self.clone();
        committed.generation = self.content_generation();
        committed.interim_of = None;
        for entry in committed.files.values_mut() {
            entry.pending.clear();
        }
        committed
    }

    pub fn empty() -> Manifest {
        Manifest {
            set_id: String::new(),
            generation: 0,
            written_at: String::new(),
            run_id: String::new(),
            interim_of: None,
            block_size: BLOCK_SIZE as u64,
            files: BTreeMap::new(),
            folders: BTreeMap::new(),
            symlinks: BTreeMap::new(),
        }
    }

    /// The bytes of a replica: header line with the body digest, then the body.
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("a manifest always serializes");
        let digest = sealed_digest(FORMAT_VERSION, &body);
        let mut out = format!("{MAGIC} {FORMAT_VERSION} {digest}\n").into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Every file's digest in b3sum's check format, paths relative to a copy's root. A path
    /// with a backslash is escaped the way b3sum escapes it (line starts with `\\`).
    pub fn b3sums(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(self.files.len() * 100);
        for (path, entry) in &self.files {
            let path = path.as_str();
            let digest = entry.current.blake3;
            let _ = if path.contains('\\') {
                writeln!(out, "\\{digest}  {}", path.replace('\\', "\\\\"))
            } else {
                writeln!(out, "{digest}  {path}")
            };
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, ReplicaDefect> {
        let newline = bytes.iter().position(|&b| b == b'\n').ok_or(ReplicaDefect::NotAManifest)?;
        let header =
            std::str::from_utf8(&bytes[..newline]).map_err(|_| ReplicaDefect::NotAManifest)?;
        let body = &bytes[newline + 1..];
        let mut fields = header.split(' ');
        if fields.next() != Some(MAGIC) {
            return Err(ReplicaDefect::NotAManifest);
        }
        let version: u32 =
            fields.next().and_then(|v| v.parse().ok()).ok_or(ReplicaDefect::NotAManifest)?;
        let recorded: Digest =
            fields.next().and_then(|d| d.parse().ok()).ok_or(ReplicaDefect::NotAManifest)?;
        if fields.next().is_some() {
            return Err(ReplicaDefect::NotAManifest);
        }
        // The digest first: a version is believed only from a replica that checks.
        if sealed_digest(version, body) != recorded {
            return Err(ReplicaDefect::DigestMismatch);
        }
        if version > FORMAT_VERSION {
            return Err(ReplicaDefect::FutureVersion(version));
        }
        let manifest: Manifest =
            serde_json::from_slice(body).map_err(|e| ReplicaDefect::Invalid(e.to_string()))?;
        manifest.check().map_err(ReplicaDefect::Invalid)?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        // A generation grows by at most a few per run; one this large was not written by a
        // run, and would let the replica win every future vote and overflow the count.
        if self.generation > MAX_GENERATION {
            return Err(format!("generation {} is implausibly large", self.generation));
        }
        if self.block_size != BLOCK_SIZE as u64 {
            return Err(format!("block_size {} is not {BLOCK_SIZE}", self.block_size));
        }
        for (path, entry) in &self.files {
            entry.current.check(path)?;
            for pending in &entry.pending {
                pending.check(path)?;
            }
        }
        self.check_shape()
    }

    /// Each symlink or folder path is one thing, and nothing lies below a symlink: a crafted
    /// record must never make restore write through a symlink it made itself. (A file below a
    /// file is only a conflict restore reports: records before format 4 may hold one.)
    fn check_shape(&self) -> Result<(), String> {
        if self.symlinks.is_empty() && self.folders.is_empty() {
            return Ok(());
        }
        let paths = self.files.keys().chain(self.folders.keys()).chain(self.symlinks.keys());
        for path in paths {
            let text = path.as_str();
            let below =
                text.match_indices('/').find(|(at, _)| self.symlinks.contains_key(&text[..*at]));
            if let Some((at, _)) = below {
                return Err(format!("{path} lies below {}, a symlink", &text[..at]));
            }
        }
        for path in self.symlinks.keys() {
            if self.files.contains_key(path) || self.folders.contains_key(path) {
                return Err(format!("{path} is recorded as a symlink and as something else"));
            }
        }
        if let Some(path) = self.folders.keys().find(|p| self.files.contains_key(*p)) {
            return Err(format!("{path} is recorded as a folder and as a file"));
        }
        Ok(())
    }
}

/// The digest in the header of a replica of format `version`: over the body alone up to
/// format 2, over `"redundo-manifest <version>\n"` and the body from 3 on (every later
/// format must keep this, or an older redundo cannot tell it from damage).
fn sealed_digest(version: u32, body: &[u8]) -> Digest {
    if version < 3 {
        return Digest::of(body);
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(format!("{MAGIC} {version}\n").as_bytes());
    hasher.update(body);
    Digest::from(hasher.finalize())
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaDefect {
    #[error("not a redundo manifest")]
    NotAManifest,
    #[error(
        "written by a newer redundo (format version {0}, this one reads up to {FORMAT_VERSION})"
    )]
    FutureVersion(u32),
    #[error("content does not match its recorded digest (torn or rotten)")]
    DigestMismatch,
    #[error("invalid content: {0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
}

/// What was found at one replica's place.
#[derive(Clone, Debug)]
pub enum ReplicaFound {
    Valid(Manifest),
    /// A valid manifest of another backup set.
    Foreign(String),
    Missing,
    Defective(ReplicaDefect),
    Unreadable(String),
}

/// How one replica compares with the chosen manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ReplicaStatus {
    Current,
    /// A valid, older generation (a target that missed runs, or a run killed mid-commit).
    Stale {
        generation: u64,
    },
    /// Same generation as the chosen one, different content: outvoted.
    Divergent,
    Missing,
    Defective {
        reason: String,
    },
    Unreadable {
        reason: String,
    },
    /// The manifest of another backup set: this target folder is shared with another config.
    Foreign {
        set_id: String,
    },
}

impl ReplicaStatus {
    pub fn is_current(&self) -> bool {
        matches!(self, ReplicaStatus::Current)
    }
}

/// The manifest chosen from the replicas.
#[derive(Debug)]
pub struct Chosen {
    pub manifest: Manifest,
    /// Files whose recorded digest differs between replicas of the newest generation: for
    /// these the manifest is in doubt and the copies vote.
    pub disputed: BTreeMap<RelPath, Vec<Digest>>,
    pub statuses: Vec<ReplicaStatus>,
    /// True when no replica was valid (a first backup, or every replica lost).
    pub none_valid: bool,
    /// A replica written by a newer redundo: its holder's index and the format version. No
    /// run may write over it, or it would downgrade the set.
    pub future: Option<(usize, u32)>,
}

/// The `files` map, refusing a path that appears twice (JSON allows it; a manifest must not).
fn unique_paths<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<BTreeMap<RelPath, V>, D::Error> {
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Unique<V> {
        type Value = BTreeMap<RelPath, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map from paths to entries")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut files = BTreeMap::new();
            while let Some((path, entry)) = map.next_entry::<RelPath, V>()? {
                if files.contains_key(&path) {
                    return Err(serde::de::Error::custom(format!("path {path} appears twice")));
                }
                files.insert(path, entry);
            }
            Ok(files)
        }
    }
    d.deserialize_map(Unique(std::marker::PhantomData))
}

/// Chooses the manifest: the newest believable generation wins (a later generation is only
/// ever written after an earlier one, by the run holding the lock); among replicas of that
/// generation the content held by most wins, ties broken by digest so the choice never
/// depends on order. `local` is the state folder's replica, if among `found`.
pub fn choose(found: &[ReplicaFound], local: Option<usize>) -> Chosen {
    let digests: Vec<Option<Digest>> = found
        .iter()
        .map(|f| match f {
            ReplicaFound::Valid(m) => Some(Digest::of(&m.encode())),
            _ => None,
        })
        .collect();
    choose_with(found, &digests, local)
}

/// [`choose`] with each valid replica's canonical digest already known (computing it is most
/// of the cost for a large manifest).
pub fn choose_with(
    found: &[ReplicaFound],
    digests: &[Option<Digest>],
    local: Option<usize>,
) -> Chosen {
    let future = found.iter().enumerate().find_map(|(i, f)| match f {
        ReplicaFound::Defective(ReplicaDefect::FutureVersion(v)) => Some((i, *v)),
        _ => None,
    });
    let limit = believable_limit(found, digests, local);
    let in_doubt = |m: &Manifest| limit.is_some_and(|limit| m.generation > limit);
    let newest = found
        .iter()
        .filter_map(|f| match f {
            ReplicaFound::Valid(m) if !in_doubt(m) => Some(m.generation),
            _ => None,
        })
        .max();
    let Some(newest) = newest else {
        let statuses = found.iter().map(status_without_winner).collect();
        return Chosen {
            manifest: Manifest::empty(),
            disputed: BTreeMap::new(),
            statuses,
            none_valid: true,
            future,
        };
    };
    // Group the newest replicas by content.
    let mut groups: BTreeMap<Digest, (usize, &Manifest)> = BTreeMap::new();
    for (f, d) in found.iter().zip(digests) {
        if let (ReplicaFound::Valid(m), Some(d)) = (f, d)
            && m.generation == newest
        {
            groups.entry(*d).or_insert((0, m)).0 += 1;
        }
    }
    let (&winner_digest, &(_, winner)) = groups
        .iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.0.cmp(a.0)))
        .expect("at least one replica has the newest generation");

    let mut disputed: BTreeMap<RelPath, Vec<Digest>> = BTreeMap::new();
    if groups.len() > 1 {
        let mut paths: Vec<&RelPath> = groups.values().flat_map(|(_, m)| m.files.keys()).collect();
        paths.sort();
        paths.dedup();
        for path in paths {
            let mut claims: Vec<Option<Digest>> =
                groups.values().map(|(_, m)| m.files.get(path).map(|e| e.current.blake3)).collect();
            claims.sort();
            claims.dedup();
            if claims.len() > 1 {
                disputed.insert(path.clone(), claims.into_iter().flatten().collect());
            }
        }
    }

    let statuses = found
        .iter()
        .zip(digests)
        .map(|(f, d)| match f {
            ReplicaFound::Valid(m) if in_doubt(m) => ReplicaStatus::Defective {
                reason: format!(
                    "generation {} is further ahead of the {} the other replicas vouch for than one interrupted run explains",
                    m.generation,
                    limit.unwrap_or_default() - 1
                ),
            },
            ReplicaFound::Valid(m) if m.generation < newest => {
                ReplicaStatus::Stale { generation: m.generation }
            }
            ReplicaFound::Valid(_) if *d == Some(winner_digest) => ReplicaStatus::Current,
            ReplicaFound::Valid(_) => ReplicaStatus::Divergent,
            other => status_without_winner(other),
        })
        .collect();
    Chosen { manifest: winner.clone(), disputed, statuses, none_valid: false, future }
}

/// The highest generation a replica may have and be believed. A commit writes the state
/// folder's replica before any target's, so no honest target is more than one generation
/// (a replica an older redundo wrote first) ahead of it; and two replicas holding identical
/// bytes vouch for their generation, since damage never makes two replicas agree. A lone
/// replica beyond both is in doubt however valid its digest: trusting it would let one
/// crafted or misplaced file outrank every agreeing copy. `None` when nothing vouches.
fn believable_limit(
    found: &[ReplicaFound],
    digests: &[Option<Digest>],
    local: Option<usize>,
) -> Option<u64> {
    let generation = |i: usize| match &found[i] {
        ReplicaFound::Valid(m) => Some(m.generation),
        _ => None,
    };
    let from_local = local.and_then(generation);
    let mut held: BTreeMap<Digest, (usize, u64)> = BTreeMap::new();
    for (i, d) in digests.iter().enumerate() {
        if let (Some(d), Some(g)) = (d, generation(i)) {
            held.entry(*d).or_insert((0, g)).0 += 1;
        }
    }
    let agreed = held.values().filter(|(count, _)| *count >= 2).map(|(_, g)| *g).max();
    from_local.max(agreed).map(|g| g.saturating_add(1))
}

fn status_without_winner(found: &ReplicaFound) -> ReplicaStatus {
    match found {
        ReplicaFound::Valid(m) => ReplicaStatus::Stale { generation: m.generation },
        ReplicaFound::Missing => ReplicaStatus::Missing,
        ReplicaFound::Defective(d) => ReplicaStatus::Defective { reason: d.to_string() },
        ReplicaFound::Unreadable(r) => ReplicaStatus::Unreadable { reason: r.clone() },
        ReplicaFound::Foreign(set_id) => ReplicaStatus::Foreign { set_id: set_id.clone() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(content: &[u8], mtime_ns: i64) -> FileVersion {
        let digest = crate::record::digest::hash_stream(&mut &content[..], &mut |_| {}).unwrap();
        FileVersion::new(content.len() as u64, mtime_ns, digest)
    }

    fn manifest(generation: u64, files: &[(&str, &[u8])]) -> Manifest {
        let mut m = Manifest::empty();
        m.generation = generation;
        m.written_at = "2026-01-01T00:00:00Z".into();
        for (path, content) in files {
            m.files.insert(
                RelPath::new(path).unwrap(),
                Entry { current: version(content, 7), pending: Vec::new() },
            );
        }
        m
    }

    #[test]
    fn changes_count_new_changed_and_deleted_files_by_content() {
        let base = manifest(1, &[("a", b"alpha"), ("b", b"beta"), ("gone", b"x")]);
        let mut next = manifest(3, &[("a", b"alpha"), ("b", b"BETA"), ("new", b"n")]);
        // A new mtime on the same bytes is no change of content.
        next.files.get_mut(&RelPath::new("a").unwrap()).unwrap().current.mtime_ns = 99;
        assert_eq!(next.changes_from(&base), Changes { new: 1, changed: 1, deleted: 1 });
        assert_eq!(base.changes_from(&base), Changes::default());
        assert_eq!(base.changes_from(&Manifest::empty()), Changes { new: 3, ..Changes::default() });
        assert_eq!(next.bytes(), 5 + 4 + 1);
    }

    #[test]
    fn encode_decode_round_trips() {
        let big = vec![3u8; BLOCK_SIZE + 5];
        let m = manifest(4, &[("a", b"alpha"), ("dir/big", &big), ("empty", b"")]);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        assert_eq!(m.files[&RelPath::new("dir/big").unwrap()].current.blocks.len(), 2);
    }

    #[test]
    fn folders_and_symlinks_round_trip_and_nothing_may_lie_below_a_symlink() {
        let rel = |p: &str| RelPath::new(p).unwrap();
        let mut m = manifest(2, &[("dir/a", b"alpha")]);
        m.folders.insert(rel("dir"), FolderRecord { mtime_ns: 5 });
        m.folders.insert(rel("empty"), FolderRecord { mtime_ns: 6 });
        m.symlinks.insert(rel("link"), "dir/a".into());
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        // (what a crafted record adds, why it must be refused)
        type Craft = fn(&mut Manifest);
        let crafted: &[(&str, Craft)] = &[
            ("a file below a symlink", |m| {
                m.files.insert(
                    RelPath::new("link/x").unwrap(),
                    m.files.values().next().unwrap().clone(),
                );
            }),
            ("a folder below a symlink", |m| {
                m.folders.insert(RelPath::new("link/sub").unwrap(), FolderRecord { mtime_ns: 1 });
            }),
            ("a symlink that is also a folder", |m| {
                m.symlinks.insert(RelPath::new("empty").unwrap(), "x".into());
            }),
            ("a folder that is also a file", |m| {
                m.folders.insert(RelPath::new("dir/a").unwrap(), FolderRecord { mtime_ns: 1 });
            }),
        ];
        for (what, craft) in crafted {
            let mut bad = m.clone();
            craft(&mut bad);
            assert!(
                matches!(Manifest::decode(&bad.encode()), Err(ReplicaDefect::Invalid(_))),
                "{what} was accepted"
            );
        }
    }

    #[test]
    fn decode_rejects_torn_garbage_future_and_crafted_replicas() {
        let bytes = manifest(1, &[("a", b"alpha")]).encode();
        assert_eq!(Manifest::decode(&bytes[..bytes.len() - 3]), Err(ReplicaDefect::DigestMismatch));
        assert_eq!(Manifest::decode(b"\x00\x01garbage"), Err(ReplicaDefect::NotAManifest));
        // One flipped bit in the version number is damage, not a newer redundo.
        let flipped = String::from_utf8(bytes.clone()).unwrap().replacen(
            &format!(" {FORMAT_VERSION} "),
            &format!(" {} ", FORMAT_VERSION ^ 1),
            1,
        );
        assert_eq!(Manifest::decode(flipped.as_bytes()), Err(ReplicaDefect::DigestMismatch));
        let body = &bytes[bytes.iter().position(|&b| b == b'\n').unwrap() + 1..];
        let mut future = format!("{MAGIC} 99 {}\n", sealed_digest(99, body)).into_bytes();
        future.extend_from_slice(body);
        assert_eq!(Manifest::decode(&future), Err(ReplicaDefect::FutureVersion(99)));

        let crafted = |body: &str| {
            let mut out = format!("{MAGIC} 1 {}\n", Digest::of(body.as_bytes())).into_bytes();
            out.extend_from_slice(body.as_bytes());
            Manifest::decode(&out)
        };
        let digest = Digest::of(b"x");
        let escaping = format!(
            r#"{{"generation":1,"written_at":"","block_size":1048576,"files":{{"../etc/passwd":{{"size":1,"mtime_ns":0,"blake3":"{digest}"}}}}}}"#
        );
        assert!(matches!(crafted(&escaping), Err(ReplicaDefect::Invalid(e)) if e.contains("..")));
        let lying = format!(
            r#"{{"generation":1,"written_at":"","block_size":1048576,"files":{{"a":{{"size":5000000,"mtime_ns":0,"blake3":"{digest}","blocks":["{digest}"]}}}}}}"#
        );
        assert!(
            matches!(crafted(&lying), Err(ReplicaDefect::Invalid(e)) if e.contains("block digests"))
        );
    }

    #[test]
    fn b3sums_lines_are_in_b3sum_check_format() {
        let m = manifest(1, &[("a b/c", b"x"), ("back\\slash", b"y")]);
        let text = m.b3sums();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("{}  a b/c", Digest::of(b"x")));
        assert_eq!(lines[1], format!("\\{}  back\\\\slash", Digest::of(b"y")));
    }

    #[test]
    fn newest_generation_wins_and_older_replicas_are_stale() {
        let old = manifest(1, &[("a", b"1")]);
        let new = manifest(2, &[("a", b"2")]);
        let chosen = choose(
            &[
                ReplicaFound::Valid(old.clone()),
                ReplicaFound::Valid(new.clone()),
                ReplicaFound::Missing,
                ReplicaFound::Defective(ReplicaDefect::DigestMismatch),
            ],
            Some(0),
        );
        assert_eq!(chosen.manifest, new);
        assert!(chosen.disputed.is_empty());
        assert_eq!(chosen.statuses[0], ReplicaStatus::Stale { generation: 1 });
        assert_eq!(chosen.statuses[1], ReplicaStatus::Current);
        assert_eq!(chosen.statuses[2], ReplicaStatus::Missing);
    }

    #[test]
    fn same_generation_majority_wins_and_differences_are_disputed() {
        let good = manifest(3, &[("a", b"A"), ("b", b"B")]);
        let odd = manifest(3, &[("a", b"X"), ("b", b"B")]);
        let chosen = choose(
            &[
                ReplicaFound::Valid(odd.clone()),
                ReplicaFound::Valid(good.clone()),
                ReplicaFound::Valid(good.clone()),
            ],
            Some(0),
        );
        assert_eq!(chosen.manifest, good);
        assert_eq!(chosen.statuses[0], ReplicaStatus::Divergent);
        let a = RelPath::new("a").unwrap();
        assert_eq!(chosen.disputed.keys().collect::<Vec<_>>(), vec![&a]);
    }

    #[test]
    fn a_lone_replica_too_far_ahead_is_in_doubt_not_the_winner() {
        let at = |g| ReplicaFound::Valid(manifest(g, &[("a", b"1")]));
        let huge = MAX_GENERATION;
        // replicas (state folder first), whether it is local, chosen generation, in doubt
        let lost = ReplicaFound::Missing;
        // replicas (the state folder's first), chosen generation, replicas in doubt
        let cases: [(&str, Vec<ReplicaFound>, u64, Vec<usize>); 6] = [
            ("one crafted target", vec![at(5), at(5), at(huge), at(5)], 5, vec![2]),
            ("killed commit: state folder ahead", vec![at(6), at(5), at(5)], 6, vec![]),
            ("older redundo: a target one ahead", vec![at(5), at(6), at(5)], 6, vec![]),
            ("target two ahead of the state folder", vec![at(5), at(7), at(5)], 5, vec![1]),
            ("state lost, two agree", vec![lost.clone(), at(9), at(9), at(40)], 9, vec![3]),
            ("state lost, nothing vouches", vec![lost, at(9), at(40)], 40, vec![]),
        ];
        for (name, found, generation, doubted) in cases {
            let chosen = choose(&found, Some(0));
            assert_eq!(chosen.manifest.generation, generation, "{name}");
            for (i, status) in chosen.statuses.iter().enumerate() {
                let defective = matches!(status, ReplicaStatus::Defective { .. });
                assert_eq!(defective, doubted.contains(&i), "{name}: replica {i} is {status:?}");
            }
        }
    }

    #[test]
    fn no_valid_replica_gives_an_empty_manifest() {
        let chosen = choose(&[ReplicaFound::Missing, ReplicaFound::Missing], Some(0));
        assert!(chosen.none_valid);
        assert!(chosen.manifest.files.is_empty());
    }

    #[test]
    fn only_a_copy_holding_the_version_whole_can_find_its_block_digests_wrong() {
        let data: Vec<u8> = (0..(3 * BLOCK_SIZE + 9)).map(|i| (i * 31 % 241) as u8).collect();
        let truth = version(&data, 7);
        let hashed = truth.blocks.clone();
        let (whole, size) = (truth.blake3, truth.size);
        let mut swapped = truth.clone();
        swapped.blocks.swap(1, 2);
        let mut last_wrong = truth.clone();
        last_wrong.blocks[3] = Digest::of(b"x");
        let small = version(b"alpha", 7);
        let empty = version(b"", 7);
        let other = Digest::of(b"other");
        // name, record, the copy's whole digest, size and blocks, the blocks that differ
        type Case<'a> = (&'a str, &'a FileVersion, Digest, u64, Vec<Digest>, Vec<usize>);
        let cases: Vec<Case> = vec![
            ("record and copy agree", &truth, whole, size, hashed.clone(), vec![]),
            ("two blocks swapped in the record", &swapped, whole, size, hashed.clone(), vec![1, 2]),
            ("the short last block wrong", &last_wrong, whole, size, hashed.clone(), vec![3]),
            (
                "copy of other content: not the record's fault",
                &swapped,
                other,
                size,
                vec![],
                vec![],
            ),
            (
                "same digest, other size: not comparable",
                &swapped,
                whole,
                size - 1,
                hashed.clone(),
                vec![],
            ),
            (
                "one block: its digest is the whole one",
                &small,
                small.blake3,
                5,
                vec![small.blake3],
                vec![],
            ),
            ("one block hashed otherwise", &small, small.blake3, 5, vec![other], vec![0]),
            ("empty file, no blocks", &empty, Digest::of(b""), 0, vec![], vec![]),
        ];
        for (name, record, whole, size, blocks, expected) in cases {
            assert_eq!(record.blocks_differing(whole, size, &blocks), expected, "{name}");
        }
        assert_eq!(swapped.with_blocks(hashed), truth);
        assert_eq!(small.clone().with_blocks(vec![small.blake3]).blocks, vec![]);
    }

    #[test]
    fn unchanged_means_size_mtime_ctime_and_inode_and_a_racy_read_is_rechecked() {
        use crate::record::stat::FileId;
        const S: i64 = 1_000_000_000;
        let stat = |size, mtime_ns, ctime_ns, ino| FileStat {
            ctime_ns,
            file: Some(FileId { dev: 1, ino }),
            ..FileStat::sized(size, mtime_ns)
        };
        let read = stat(5, 100 * S, 100 * S, 7);
        let calm = version(b"alpha", 100 * S).read_from(&read, 200 * S);
        let racy = version(b"alpha", 100 * S).read_from(&read, 101 * S);
        let old = version(b"alpha", 100 * S); // format 1: no source stat recorded
        assert!(!calm.source.unwrap().racy && racy.source.unwrap().racy);
        // name, version, stat now, unchanged, must recheck
        let cases = [
            ("as read", &calm, read, true, false),
            ("mtime put back, ctime moved", &calm, stat(5, 100 * S, 150 * S, 7), false, true),
            ("saved through a new file", &calm, stat(5, 100 * S, 100 * S, 8), false, true),
            ("size differs", &calm, stat(6, 100 * S, 100 * S, 7), false, true),
            ("racy read, stat as read", &racy, read, true, true),
            (
                "format 1 record trusts size and mtime",
                &old,
                stat(5, 100 * S, 150 * S, 8),
                true,
                false,
            ),
        ];
        for (name, version, now, unchanged, recheck) in cases {
            assert_eq!(version.source_unchanged(&now), unchanged, "{name}");
            assert_eq!(version.must_recheck(&now), recheck, "{name}");
        }
    }
}
