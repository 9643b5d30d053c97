//! HDFS's errors made fit for one report line: the RemoteException's class and message
//! without the Java stack trace some carry, and request errors naming the NameNode or
//! DataNode they went to instead of the REST URL.

use super::super::http::{one_line, one_line_error};

/// The longest message kept from an error body; the rest is cut.
const MAX_MESSAGE: usize = 400;

/// `message` up to its first Java stack frame (`at org.apache...(FSNamesystem.java:2371)`),
/// on one line, at most [`MAX_MESSAGE`] characters. An IPC RemoteException relayed by a
/// DataNode carries the NameNode's whole trace in its message: about 2.5 KB per file.
pub(super) fn without_stack_trace(message: &str) -> String {
    let frame = |line: &str| {
        let line = line.trim();
        line.starts_with("at ") && line.ends_with(')') && line.contains('(')
    };
    let kept: Vec<&str> = message.lines().take_while(|line| !frame(line)).collect();
    let text = one_line(&kept.join("\n"));
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// A request error on one line, naming the NameNode or DataNode (`host:port`) it was sent to;
/// the URL itself (the REST API's, with the user name in it) is left out.
pub(super) fn request_error(e: reqwest::Error, namenode: &str) -> String {
    let to = e.url().and_then(host_port);
    let text = one_line_error(&e.without_url());
    match to {
        Some(to) if to == namenode => format!("NameNode {to}: {text}"),
        Some(to) => format!("DataNode {to}: {text}"),
        None => text,
    }
}

/// `host:port` of a URL.
pub(super) fn host_port(url: &reqwest::Url) -> Option<String> {
    Some(format!("{}:{}", url.host_str()?, url.port_or_known_default()?))
}

/// The HDFS path a WebHDFS URL names (`/webhdfs/v1/a%20b` is `/a b`).
pub(super) fn hdfs_path(url: &reqwest::Url) -> String {
    let path = url.path();
    let path = path.strip_prefix("/webhdfs/v1").unwrap_or(path);
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_traces_are_cut_and_messages_kept_on_one_line() {
        let cases: &[(&str, &str)] = &[
            ("File does not exist: /a", "File does not exist: /a"),
            (
                "Permission denied: user=alice, access=WRITE,\n\tinode=\"/b\":hdfs:supergroup:drwxr-xr-x",
                "Permission denied: user=alice, access=WRITE, inode=\"/b\":hdfs:supergroup:drwxr-xr-x",
            ),
            (
                "Invalid path name /t/a:b.txt\n\tat org.apache.hadoop.hdfs.server.namenode.FSNamesystem.startFileInt(FSNamesystem.java:2371)\n\tat org.apache.hadoop.ipc.Server$Handler.run(Server.java:2043)\n",
                "Invalid path name /t/a:b.txt",
            ),
            (
                "File /t/x could only be replicated to 0 nodes instead of minReplication (=1).  There are 0 datanode(s) running.\n\tat org.apache.hadoop.hdfs.server.blockmanagement.BlockManager.chooseTarget4NewBlock(BlockManager.java:1571)\n\tat java.security.AccessController.doPrivileged(Native Method)",
                "File /t/x could only be replicated to 0 nodes instead of minReplication (=1). There are 0 datanode(s) running.",
            ),
        ];
        for (message, want) in cases {
            assert_eq!(without_stack_trace(message), *want);
        }
        let long = "x".repeat(5000);
        let cut = without_stack_trace(&long);
        assert_eq!(cut.len(), MAX_MESSAGE + 3);
        assert!(cut.ends_with("..."));
        // A cut never splits a character.
        assert!(without_stack_trace(&"ü".repeat(1000)).ends_with("..."));
    }

    #[test]
    fn an_hdfs_path_is_read_back_from_its_url() {
        let url = reqwest::Url::parse(
            "http://127.0.0.1:9870/webhdfs/v1/b/a%20b%23%C3%BC.bin?op=OPEN&user.name=x",
        )
        .unwrap();
        assert_eq!(hdfs_path(&url), "/b/a b#ü.bin");
        assert_eq!(host_port(&url).as_deref(), Some("127.0.0.1:9870"));
    }
}
