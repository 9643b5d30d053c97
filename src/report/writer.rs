//! The only writer to stdout: turns a command's report into human lines or one JSON
//! document, and decides the exit code from its findings.
//!
//! Human output: one line per problem, `<copy>: <path>: <WHAT>: <detail>`, then notices
//! (pending, unknown, done), then one summary line. `--quiet` prints problems and the summary
//! only when there is a problem; `-v` adds a line per good copy.

use std::io::{self, Write};

use anyhow::Result;
use serde::Serialize;

use super::exit::Exit;
use super::findings::{Finding, Findings};
use super::outcome::{
    BackupReport, Generation, GenerationsReport, InitReport, LsReport, PurgeReport,
    QuarantineReport, RepairReport, RestoreReport, StatusReport, VerifyReport,
};
use crate::decide::purge::{DeleteWhy, KeepWhy};
use crate::record::history::CopyCounts;
use crate::record::verdict::Check;

pub struct Output {
    pub json: bool,
    pub quiet: bool,
    pub verbose: bool,
}

pub enum Report {
    Init(InitReport),
    Backup(BackupReport),
    Verify(VerifyReport),
    Repair(RepairReport),
    Status(Box<StatusReport>),
    Restore(RestoreReport),
    Ls(LsReport),
    Generations(GenerationsReport),
    Quarantine(QuarantineReport),
    Purge(PurgeReport),
}

impl Report {
    fn name(&self) -> &'static str {
        match self {
            Report::Init(_) => "init",
            Report::Backup(_) => "backup",
            Report::Verify(_) => "verify",
            Report::Repair(_) => "repair",
            Report::Status(_) => "status",
            Report::Restore(_) => "restore",
            Report::Ls(_) => "ls",
            Report::Generations(_) => "generations",
            Report::Quarantine(_) => "quarantine",
            Report::Purge(_) => "quarantine purge",
        }
    }

    fn findings(&self) -> Option<&Findings> {
        match self {
            Report::Init(r) => Some(&r.findings),
            Report::Backup(r) => Some(&r.findings),
            Report::Verify(r) => Some(&r.findings),
            Report::Repair(r) => Some(&r.findings),
            Report::Status(r) => Some(&r.findings),
            Report::Restore(r) => Some(&r.findings),
            Report::Ls(r) => Some(&r.findings),
            Report::Generations(r) => Some(&r.findings),
            Report::Quarantine(r) => Some(&r.findings),
            Report::Purge(r) => Some(&r.findings),
        }
    }

    pub fn exit(&self) -> Exit {
        self.findings().map_or(Exit::Healthy, Findings::exit)
    }

    pub fn print(&self, output: &Output) -> Result<()> {
        let stdout = io::stdout();
        let mut out = io::BufWriter::new(stdout.lock());
        if output.json {
            let body = match self {
                Report::Init(r) => json_document(self.name(), self.exit(), r),
                Report::Backup(r) => json_document(self.name(), self.exit(), r),
                Report::Verify(r) => json_document(self.name(), self.exit(), r),
                Report::Repair(r) => json_document(self.name(), self.exit(), r),
                Report::Status(r) => json_document(self.name(), self.exit(), r),
                Report::Restore(r) => json_document(self.name(), self.exit(), r),
                Report::Ls(r) => json_document(self.name(), self.exit(), r),
                Report::Generations(r) => json_document(self.name(), self.exit(), r),
                Report::Quarantine(r) => json_document(self.name(), self.exit(), r),
                Report::Purge(r) => json_document(self.name(), self.exit(), r),
            };
            // Rendered first, so a closed stdout shows as the plain io error it is.
            let mut text = serde_json::to_vec_pretty(&body)?;
            text.push(b'\n');
            out.write_all(&text)?;
        } else {
            self.print_human(&mut out, output)?;
        }
        out.flush()?;
        Ok(())
    }

    fn print_human(&self, out: &mut dyn Write, output: &Output) -> io::Result<()> {
        let exit = self.exit();
        if output.quiet && exit == Exit::Healthy {
            return Ok(());
        }
        if let Some(findings) = self.findings() {
            for problem in &findings.problems {
                writeln!(out, "{}", finding_line(problem, problem.kind.label()))?;
            }
            if !output.quiet {
                for notice in &findings.notices {
                    writeln!(out, "{}", finding_line(notice, notice.kind.label()))?;
                }
            }
        }
        match self {
            Report::Init(r) => {
                let targets: Vec<String> =
                    r.targets.iter().map(|t| format!("{} ({})", t.name, t.location)).collect();
                writeln!(
                    out,
                    "wrote {}: source {}; targets {}",
                    r.config,
                    r.source,
                    targets.join(", ")
                )?;
                if !output.quiet {
                    writeln!(out, "next: redundo backup --config {}", r.config)?;
                }
            }
            Report::Backup(r) => {
                if output.verbose || r.dry_run {
                    for c in &r.copied {
                        let kind = match c.kind {
                            crate::decide::plan::JobKind::New => "new",
                            crate::decide::plan::JobKind::Changed => "changed",
                            crate::decide::plan::JobKind::Refresh => "filled",
                            crate::decide::plan::JobKind::Recheck => "rechecked",
                        };
                        writeln!(out, "{kind}: {} -> {}", c.path, c.targets.join(", "))?;
                    }
                    for path in &r.pruned_paths {
                        writeln!(out, "prune: {path}")?;
                    }
                }
                writeln!(out, "{}", backup_summary(r))?
            }
            Report::Verify(r) => {
                if output.verbose {
                    for ok in &r.ok {
                        // A deep verify proves every good copy by its BLAKE3: said once.
                        match ok.check {
                            Check::Blake3 => writeln!(out, "{}: {}: OK", ok.copy, ok.path)?,
                            check => {
                                writeln!(out, "{}: {}: OK ({})", ok.copy, ok.path, check.word())?
                            }
                        }
                    }
                }
                writeln!(out, "{}", verify_summary(r))?;
            }
            Report::Repair(r) => {
                if r.dry_run {
                    for a in &r.actions {
                        writeln!(
                            out,
                            "{}: {}: would rewrite from {} (was {})",
                            a.copy,
                            a.path,
                            a.from,
                            a.was.word()
                        )?;
                    }
                    for rec in &r.records {
                        writeln!(
                            out,
                            "{}: would rewrite the recorded digests of {} from {}'s content",
                            rec.path,
                            blocks_text(&rec.blocks),
                            rec.from
                        )?;
                    }
                } else if output.verbose {
                    for a in &r.actions {
                        writeln!(out, "{}: {}: rewritten from {}", a.copy, a.path, a.from)?;
                    }
                }
                writeln!(out, "{}", repair_summary(r))?;
            }
            Report::Status(r) => print_status(out, r)?,
            Report::Quarantine(r) => {
                for e in &r.entries {
                    let size = e.size.map_or("gone".to_string(), human_bytes);
                    writeln!(
                        out,
                        "{}: quarantine/{}/{} ({size}): {}",
                        e.copy, e.stamp, e.path, e.why
                    )?;
                }
                if r.entries.is_empty() {
                    writeln!(out, "quarantine: empty")?;
                }
            }
            Report::Purge(r) => {
                let done = if r.dry_run { "would delete" } else { "deleted" };
                for d in &r.deleted {
                    let because = match d.why {
                        DeleteWhy::Redundant => "the same bytes as",
                        DeleteWhy::DamagedCopyReplaced => {
                            "damage taken out of this target's copy of"
                        }
                    };
                    writeln!(
                        out,
                        "{}",
                        printable(&format!(
                            "{}: quarantine/{}/{} ({}): {done}: {because} {}, whose copy on {} verified good just now",
                            d.copy,
                            d.stamp,
                            d.path,
                            human_bytes(d.size),
                            d.same_as,
                            d.verified_on
                        ))
                    )?;
                }
                if !output.quiet {
                    // An unreadable one is a problem line already.
                    let kept = r.kept.iter().filter(|k| k.reason != KeepWhy::Unreadable);
                    for k in kept {
                        let size =
                            k.size.map_or(String::new(), |s| format!(" ({})", human_bytes(s)));
                        writeln!(
                            out,
                            "{}",
                            printable(&format!(
                                "{}: quarantine/{}/{}{size}: kept: {}",
                                k.copy, k.stamp, k.path, k.why
                            ))
                        )?;
                    }
                }
                writeln!(out, "{}", purge_summary(r))?;
            }
            Report::Ls(r) => {
                for f in &r.files {
                    if r.long || output.verbose {
                        let when = mtime_text(f.mtime_ns);
                        let good = if f.verified_good_on.is_empty() {
                            "never verified".to_string()
                        } else {
                            format!("good on {}", f.verified_good_on.join(", "))
                        };
                        let pending = if f.pending { "; a newer version pending" } else { "" };
                        let proved: Vec<String> = f
                            .last_proved
                            .iter()
                            .map(|(target, proof)| format!("{target} by {}", proof.by.word()))
                            .collect();
                        let proved = match proved.is_empty() {
                            true => String::new(),
                            false => format!("; last proved: {}", proved.join(", ")),
                        };
                        writeln!(
                            out,
                            "{} {:>12} {when} {} ({good}{proved}{pending})",
                            f.blake3, f.size, f.path
                        )?;
                    } else {
                        writeln!(out, "{:>12} {}", f.size, f.path)?;
                    }
                }
            }
            Report::Generations(r) => {
                for (i, g) in r.generations.iter().enumerate() {
                    let older = r.generations.get(i + 1).map(|o| o.generation);
                    writeln!(out, "{}", printable(&generation_line(g, older)))?;
                }
                let restorable = r.generations.iter().filter(|g| g.restorable).count();
                writeln!(
                    out,
                    "generations: {} listed, {restorable} restorable; current {}",
                    r.generations.len(),
                    r.current
                )?;
            }
            Report::Restore(r) => {
                let from: Vec<String> =
                    r.blocks_from.iter().map(|(name, n)| format!("{name} {n}")).collect();
                writeln!(
                    out,
                    "restore: {} files ({}) into {} from generation {}; blocks read: {}",
                    r.files,
                    human_bytes(r.bytes),
                    r.to,
                    r.generation,
                    if from.is_empty() { "none".into() } else { from.join(", ") }
                )?;
            }
        }
        Ok(())
    }
}

fn json_document<T: Serialize>(command: &str, exit: Exit, report: &T) -> serde_json::Value {
    let mut doc = serde_json::json!({ "command": command, "exit_code": exit.code() });
    if let (Some(doc), Ok(serde_json::Value::Object(fields))) =
        (doc.as_object_mut(), serde_json::to_value(report))
    {
        doc.extend(fields);
    }
    doc
}

/// The one JSON document for a run that ended in an error.
pub fn print_error_json(command: &str, exit: Exit, err: &anyhow::Error) {
    let doc =
        serde_json::json!({ "command": command, "exit_code": exit.code(), "error": one_line(err) });
    let _ = writeln!(io::stdout(), "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}

/// The error chain on one line: `outer: inner: root cause`.
pub fn one_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn finding_line<K>(finding: &Finding<K>, label: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if let Some(copy) = &finding.copy {
        parts.push(copy);
    }
    if let Some(path) = &finding.path {
        parts.push(path);
    }
    parts.push(label);
    parts.push(&finding.detail);
    printable(&parts.join(": "))
}

/// One report line stays one line: control characters (a newline in a file name, say) are
/// escaped, so a name can never forge a line of its own.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `block 3` or `blocks 1, 2` for a report line.
pub fn blocks_text(blocks: &[usize]) -> String {
    let list: Vec<String> = blocks.iter().map(usize::to_string).collect();
    format!("block{} {}", if blocks.len() == 1 { "" } else { "s" }, list.join(", "))
}

/// `1 file`, `2 files`, `1 copy`, `3 copies`.
fn count(n: usize, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

/// An mtime as RFC 3339 UTC, to the second.
fn mtime_text(mtime_ns: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(mtime_ns.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `generation 3 (2026-11-26T05:14:17Z): 5 files, 1.5 MiB; 0 new, 1 changed, 0 deleted;
/// kept on nas, usb (restore --generation 3)`. `older` is the next older generation listed:
/// the changes name the generation they are from only when it is another.
fn generation_line(g: &Generation, older: Option<u64>) -> String {
    let at = g.at.as_deref().map_or(String::new(), |at| format!(" ({at})"));
    let size = match (g.files, g.bytes) {
        (Some(files), Some(bytes)) => format!("{}, {}", count(files, "file"), human_bytes(bytes)),
        _ => "files unknown".to_string(),
    };
    let changes = match &g.changes {
        Some(c) => {
            let since = if older == Some(c.since) || c.since == 0 {
                String::new()
            } else {
                format!(" since generation {}", c.since)
            };
            format!("{} new, {} changed, {} deleted{since}", c.new, c.changed, c.deleted)
        }
        None => "changes not recorded".to_string(),
    };
    let state = if g.current {
        "current".to_string()
    } else if g.restorable {
        format!("kept on {} (restore --generation {})", g.kept_on.join(", "), g.generation)
    } else {
        let mut why = format!("not restorable: {}", g.why_not.as_deref().unwrap_or("unknown"));
        if !g.missing_examples.is_empty() {
            why.push_str(&format!(", e.g. {}", g.missing_examples.join(", ")));
        }
        why
    };
    format!("generation {}{at}: {size}; {changes}; {state}", g.generation)
}

fn purge_summary(r: &PurgeReport) -> String {
    let problems = match r.findings.problems.len() {
        0 => String::new(),
        n => format!("; {}", count(n, "problem")),
    };
    if r.dry_run {
        format!(
            "quarantine purge --dry-run: would delete {} ({}); {} kept; nothing deleted{problems}",
            count(r.files_deleted, "file"),
            human_bytes(r.bytes_freed),
            r.files_kept
        )
    } else {
        format!(
            "quarantine purge: {} deleted, {} freed; {} kept{problems}",
            count(r.files_deleted, "file"),
            human_bytes(r.bytes_freed),
            r.files_kept
        )
    }
}

fn backup_summary(r: &BackupReport) -> String {
    if r.dry_run {
        return format!(
            "backup (dry run, nothing written): at generation {}, {}: would copy {} new and {} changed, fill {}, prune {}; {} to read",
            r.generation,
            count(r.files, "file"),
            r.new,
            r.changed,
            count(r.gaps_filled, "gap"),
            r.pruned,
            human_bytes(r.bytes_read)
        );
    }
    let mut line = format!(
        "backup: generation {}, {}: {} new, {} changed, {} unchanged",
        r.generation,
        count(r.files, "file"),
        r.new,
        r.changed,
        r.unchanged
    );
    if r.gaps_filled > 0 {
        line.push_str(&format!(", {} filled", count(r.gaps_filled, "gap")));
    }
    if r.pruned > 0 {
        line.push_str(&format!(", {} pruned", r.pruned));
    }
    line.push_str(&format!(
        "; {} read, {} written",
        human_bytes(r.bytes_read),
        human_bytes(r.bytes_written)
    ));
    if !r.findings.problems.is_empty() {
        line.push_str(&format!("; {}", count(r.findings.problems.len(), "problem")));
    }
    line
}

fn counts_text(c: &CopyCounts) -> String {
    let parts = [
        (c.ok, "ok"),
        (c.corrupt, "corrupt"),
        (c.missing, "missing"),
        (c.wrong_size, "wrong size"),
        (c.unreadable, "unreadable"),
        (c.pending, "pending"),
        (c.unknown, "not checked"),
    ];
    let mut shown: Vec<String> = parts
        .iter()
        .filter(|(n, what)| *n > 0 || *what == "ok")
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    // What proved the good copies, unless it is BLAKE3 for all (a deep verify says so).
    if c.ok_by.keys().any(|check| *check != Check::Blake3) {
        let by: Vec<String> = match c.ok_by.len() {
            1 => c.ok_by.keys().map(|check| check.word().to_string()).collect(),
            _ => c.ok_by.iter().map(|(check, n)| format!("{n} {}", check.word())).collect(),
        };
        shown[0].push_str(&format!(" ({})", by.join(", ")));
    }
    shown.join(", ")
}

fn verify_summary(r: &VerifyReport) -> String {
    let copies: Vec<String> =
        r.copies.iter().map(|(name, c)| format!("{name} {}", counts_text(c))).collect();
    let c = &r.coverage;
    let verdict = match (r.findings.problems.is_empty(), c.unchecked) {
        (true, 0) => "OK",
        (true, _) => "OK SO FAR (time budget spent)",
        (false, _) => "PROBLEMS FOUND",
    };
    let mode = match c.sample_percent {
        Some(pct) => format!("{}, sample {pct}%", r.mode),
        None => r.mode.to_string(),
    };
    let files = if c.checked == c.total {
        count(c.total, "file")
    } else {
        format!("{} of {}", c.checked, count(c.total, "file"))
    };
    format!(
        "verify ({mode}): {verdict}: {files} at generation {}; {}; manifest replicas {}/{} current",
        r.generation,
        if copies.is_empty() { "no copies checked".to_string() } else { copies.join("; ") },
        r.replicas_current,
        r.replicas_total
    )
}

fn repair_summary(r: &RepairReport) -> String {
    let left = r.findings.problems.len();
    // Only mentioned when there are some, as record defects are rare.
    let records = |before: &str, after: &str| match r.records.len() {
        0 => String::new(),
        1 => format!("{before}1 block list{after}"),
        n => format!("{before}{n} block lists{after}"),
    };
    if r.dry_run {
        format!(
            "repair --dry-run: would rewrite {}{}; nothing written",
            count(r.copies_healed, "copy"),
            records(" and ", "")
        )
    } else {
        format!(
            "repair: {} rewritten, {} rewritten{}; {}",
            count(r.copies_healed, "copy"),
            count(r.replicas_rewritten, "manifest replica"),
            records(" (", " corrected)"),
            if left == 0 {
                "all healthy".to_string()
            } else {
                format!("{} left", count(left, "problem"))
            }
        )
    }
}

fn print_status(out: &mut dyn Write, r: &StatusReport) -> io::Result<()> {
    writeln!(out, "config:      {}", r.config)?;
    writeln!(out, "source:      {}", r.source)?;
    match &r.manifest_written_at {
        Some(at) => writeln!(out, "manifest:    generation {}, written {at}", r.generation)?,
        None => writeln!(out, "manifest:    none yet")?,
    }
    writeln!(out, "files:       {} ({})", r.files, human_bytes(r.bytes))?;
    writeln!(out, "min_copies:  {}", r.min_copies)?;
    match &r.last_backup {
        Some(b) => writeln!(out, "last backup: {} (exit {})", b.at, b.exit_code)?,
        None => writeln!(out, "last backup: never")?,
    }
    match (&r.last_verify_at, &r.last_verify_mode) {
        (Some(at), Some(mode)) => writeln!(out, "last verify: {at} ({mode})")?,
        _ => writeln!(out, "last verify: never")?,
    }
    for copy in &r.copies {
        let replica = match &copy.manifest_replica {
            crate::record::manifest::ReplicaStatus::Current => "current".to_string(),
            other => serde_json::to_value(other)
                .ok()
                .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_string))
                .unwrap_or_default(),
        };
        let verified = copy.last_verify.as_ref().map_or("never verified".to_string(), counts_text);
        let reach = if copy.reachable { "" } else { " UNREACHABLE" };
        writeln!(
            out,
            "  {:<12} {}{reach}; manifest {replica}; last verify: {verified}",
            copy.name, copy.location
        )?;
    }
    let d = &r.durability;
    let classes: Vec<String> =
        d.files_by_verified_copies.iter().map(|(n, files)| format!("{files} with {n}")).collect();
    writeln!(out, "verified-good target copies per file: {}", classes.join(", "))?;
    if d.below_min_copies > 0 {
        writeln!(
            out,
            "below min_copies ({}): {} files, e.g. {}",
            r.min_copies,
            d.below_min_copies,
            d.below_min_copies_examples.join(", ")
        )?;
    }
    writeln!(
        out,
        "never verified since backup: {} files ({})",
        d.files_never_verified,
        human_bytes(d.bytes_never_verified)
    )?;
    for (target, age) in &d.oldest_verification_age {
        let age = age.map_or("some files have no good verification yet".to_string(), |secs| {
            humantime::format_duration(std::time::Duration::from_secs(secs as u64)).to_string()
        });
        writeln!(out, "oldest verification on {target}: {age}")?;
    }
    match &d.reliability {
        Some(rel) => {
            let shares: Vec<String> =
                rel.per_target.iter().map(|(t, r)| format!("{t} {:.4}", r)).collect();
            let formula = if rel.shared_domains.is_empty() {
                "1 - prod(1 - r_i)"
            } else {
                "1 - prod over failure domains of min(1 - r_i)"
            };
            writeln!(
                out,
                "reliability R = {formula} = {:.6} (r_i: {}; assumes {})",
                rel.estimate,
                shares.join(", "),
                rel.assumes
            )?;
            for shared in &rel.shared_domains {
                writeln!(
                    out,
                    "  {} share one failure domain ({}): counted once, as the best of them",
                    shared.targets.join(" and "),
                    shared.domain
                )?;
            }
        }
        None => writeln!(out, "reliability: unknown until a full verify has checked every target")?,
    }
    Ok(())
}
