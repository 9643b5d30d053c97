//! Which names HDFS cannot hold, over WebHDFS: the one rule, checked before anything is sent.
//!
//! Found against a real Hadoop 2.7.3 (two-step CREATE, then OPEN, of names with every ASCII
//! punctuation mark, spaces at either end, tabs and non-ASCII letters):
//! - `:` is refused by the NameNode in any component ("Invalid path name").
//! - `%` cannot travel: the NameNode puts the decoded path into the DataNode's redirect
//!   unencoded, and the DataNode decodes it a second time. `x%41.txt` is written as `xA.txt`
//!   (and read from there), a folder `x%2Fy` becomes `x/y/`, and a `%` followed by anything
//!   else is refused by the DataNode ("invalid escape sequence"). The copy would be a file no
//!   client can read back under its name, so none is written.
//!
//! Everything else tried (`\ + ; # ? & = * [ ] { } ' " < > | ~` and backquote, leading and
//! trailing spaces, `ü`, `日本`) round-trips. Control characters never reach a store (see
//! `RelPath`).

/// Why HDFS cannot hold a file at the slash-separated `path` (absolute or relative), naming
/// the first component that it cannot hold; `None` when it can.
pub(super) fn refused(path: &str) -> Option<String> {
    for part in path.split('/') {
        if part.contains(':') {
            return Some(format!(
                "HDFS cannot hold a name with ':' ({part:?}): the NameNode refuses it"
            ));
        }
        if part.contains('%') {
            return Some(format!(
                "HDFS cannot hold a name with '%' ({part:?}): its DataNodes decode the path a second time, so the copy would be written under another name and could not be read back"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::refused;

    #[test]
    fn names_hdfs_cannot_hold_are_refused_naming_the_component() {
        // (path, the component named in the refusal, or None when HDFS holds it)
        let cases: &[(&str, Option<&str>)] = &[
            ("a.txt", None),
            ("sub dir/a b#ü.bin", None),
            (" lead/trail ", None),
            ("back\\slash;+&=?*[]{}'\"<>|~`.txt", None),
            ("日本/.reserved", None),
            ("12:30 notes.txt", Some("\"12:30 notes.txt\"")),
            ("dir:x/file", Some("\"dir:x\"")),
            ("x%41.txt", Some("\"x%41.txt\"")),
            ("pct%.txt", Some("\"pct%.txt\"")),
            ("x%2Fy/f.txt", Some("\"x%2Fy\"")),
            ("ok/deeper/50%", Some("\"50%\"")),
            ("/backups/team/a%20b", Some("\"a%20b\"")),
        ];
        for (path, named) in cases {
            let got = refused(path);
            match named {
                None => assert_eq!(got, None, "{path:?} refused"),
                Some(part) => {
                    let why = got.unwrap_or_else(|| panic!("{path:?} accepted"));
                    assert!(why.starts_with("HDFS cannot hold a name with '"), "{why}");
                    assert!(why.contains(part), "{path:?}: {why}");
                    assert!(!why.contains('\n'), "{why}");
                }
            }
        }
        // A name with both is refused for the first one found.
        assert!(refused("a%b:c").unwrap().contains("':'"));
    }
}
