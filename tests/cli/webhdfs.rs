//! WebHDFS targets against an in-process fake: the wire protocol (two-step CREATE, OPEN by
//! redirect, RENAME and DELETE answering `{"boolean": ...}`, SETTIMES, GETFILECHECKSUM,
//! RemoteException bodies) and the faults a real cluster throws (5xx, dropped connections,
//! slow NameNodes, dead DataNodes, refused renames).
//!
//! The fake is a small HTTP/1.1 server on 127.0.0.1 in a thread of the test process, backed
//! by a temporary folder (HDFS path `/a/b` is `<folder>/a/b`). It answers every request with
//! `Connection: close`, records every request (raw and decoded), and takes faults that a test
//! arms per request kind. Every workspace has one local target `t1` and one WebHDFS target
//! `hdfs1` at `/backups/hdfs1`, with `timeout = "1s"` so a stuck request costs little.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::{Env, Run, bytes, flip_byte};

const ROOT: &str = "/backups/hdfs1";
const TARGET: &str = "hdfs1";

// ---------------------------------------------------------------------------------------
// The fake WebHDFS server
// ---------------------------------------------------------------------------------------

/// One request as the fake received it.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    /// Sent to the fake's DataNode side (`/datanode/...`), not the NameNode's `/webhdfs/v1/...`.
    datanode: bool,
    /// The request target exactly as on the wire (`/webhdfs/v1/...?...`).
    raw: String,
    /// The decoded HDFS path.
    path: String,
    op: String,
    /// Query parameters, raw (as sent) and decoded.
    raw_params: Vec<(String, String)>,
    params: Vec<(String, String)>,
    content_length: Option<u64>,
    chunked: bool,
    body_len: usize,
}

impl Req {
    fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn raw_param(&self, key: &str) -> Option<&str> {
        self.raw_params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A NameNode request for `op`.
    fn is(&self, op: &str) -> bool {
        !self.datanode && self.op == op
    }
}

#[derive(Clone, Debug)]
enum Action {
    /// `500` with a RemoteException body; nothing is done.
    Status500,
    /// The connection is closed without a reply; nothing is done.
    Reset,
    /// The request is carried out, then the connection is closed without a reply.
    LoseReply,
    /// No reply until well after the client's 1 s timeout; nothing is done.
    Delay,
    /// An HDFS error reply; nothing is done.
    Remote { status: u16, exception: &'static str, message: String },
    /// CREATE and OPEN redirect to a port nothing listens on.
    DeadDataNode,
    /// `{"boolean": false}`; nothing is done.
    False,
    /// GETFILECHECKSUM answers these `bytes`.
    Checksum(String),
    /// GETFILECHECKSUM answers this `algorithm` and `bytes`.
    ChecksumAs(&'static str, String),
    /// The connection is held open with no reply for half a minute.
    Stall,
    /// The request is carried out, then this HDFS path is deleted (recursively) before the
    /// reply is sent: someone removing the folder while a run is under way.
    ThenRemove(String),
}

type Matcher = Box<dyn Fn(&Req) -> bool + Send>;

struct Fault {
    when: Matcher,
    times: usize,
    action: Action,
}

struct Shared {
    store: PathBuf,
    port: u16,
    requests: Mutex<Vec<Req>>,
    faults: Mutex<Vec<Fault>>,
    /// CREATE's first step answers `200 {"Location": ...}` instead of `307`.
    redirect_as_json: Mutex<bool>,
    /// The block size each file was created with, by HDFS path.
    block_sizes: Mutex<std::collections::HashMap<String, u64>>,
}

struct Fake {
    _store: TempDir,
    shared: Arc<Shared>,
}

const ALWAYS: usize = usize::MAX;

impl Fake {
    fn start() -> Fake {
        let store = tempfile::tempdir().expect("temp dir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake WebHDFS");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            store: store.path().to_path_buf(),
            port,
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            redirect_as_json: Mutex::new(false),
            block_sizes: Mutex::new(Default::default()),
        });
        let server = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&server);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Fake { _store: store, shared }
    }

    fn port(&self) -> u16 {
        self.shared.port
    }

    fn location(&self) -> String {
        format!("webhdfs://127.0.0.1:{}{ROOT}", self.port())
    }

    /// Arms a fault for the next `times` requests that `when` selects.
    fn fault(&self, times: usize, action: Action, when: impl Fn(&Req) -> bool + Send + 'static) {
        self.shared.faults.lock().unwrap().push(Fault { when: Box::new(when), times, action });
    }

    /// How many armed faults (not counting the `ALWAYS` ones) have not fired yet.
    fn unfired(&self) -> usize {
        self.shared
            .faults
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f.times != ALWAYS)
            .map(|f| f.times)
            .sum()
    }

    fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    fn redirect_as_json(&self, on: bool) {
        *self.shared.redirect_as_json.lock().unwrap() = on;
    }

    fn requests(&self) -> Vec<Req> {
        self.shared.requests.lock().unwrap().clone()
    }

    fn clear_requests(&self) {
        self.shared.requests.lock().unwrap().clear();
    }

    /// Where the fake keeps the HDFS file at `path` relative to the target's root.
    fn file(&self, rel: &str) -> PathBuf {
        self.shared.store.join(ROOT.trim_start_matches('/')).join(rel)
    }

    /// Every file under the target's root (state folder included), relative to the root.
    fn all_files(&self) -> Vec<String> {
        let root = self.shared.store.join(ROOT.trim_start_matches('/'));
        let mut out: Vec<String> = walkdir::WalkDir::new(&root)
            .min_depth(1)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| e.path().strip_prefix(&root).unwrap().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    fn temporaries(&self) -> Vec<String> {
        self.all_files().into_iter().filter(|f| f.contains(".redundo-tmp-")).collect()
    }
}

/// A port that was bound and released: connecting to it is refused.
fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    fn boolean(value: bool) -> Reply {
        Reply::json(200, serde_json::json!({ "boolean": value }))
    }

    fn empty(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: Vec::new() }
    }

    fn remote(status: u16, exception: &str, message: &str) -> Reply {
        let java = match exception {
            "FileNotFoundException" | "IOException" => format!("java.io.{exception}"),
            "AccessControlException" => format!("org.apache.hadoop.security.{exception}"),
            _ => format!("org.apache.hadoop.hdfs.protocol.{exception}"),
        };
        Reply::json(
            status,
            serde_json::json!({ "RemoteException": {
                "exception": exception, "javaClassName": java, "message": message } }),
        )
    }

    fn not_found(path: &str) -> Reply {
        Reply::remote(404, "FileNotFoundException", &format!("File does not exist: {path}"))
    }

    fn redirect(location: String) -> Reply {
        Reply {
            status: 307,
            headers: vec![
                ("Location".into(), location),
                ("Content-Type".into(), "application/octet-stream".into()),
            ],
            body: Vec::new(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn send(stream: &mut TcpStream, reply: &Reply) {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (key, value) in &reply.headers {
        head.push_str(&format!("{key}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", reply.body.len()));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&reply.body);
    let _ = stream.flush();
}

/// Reads one request (head and body) from the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(Req, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let raw = parts.next()?.to_string();
    let mut content_length = None;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (key, value) = header.split_once(':')?;
        let value = value.trim();
        match key.to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.parse().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut trailer = String::new();
                    reader.read_line(&mut trailer).ok()?;
                    if trailer.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = content_length {
        body.resize(n as usize, 0);
        reader.read_exact(&mut body).ok()?;
    }

    let (raw_path, query) = raw.split_once('?').unwrap_or((&raw, ""));
    let (datanode, hdfs_path) = if let Some(rest) = raw_path.strip_prefix("/webhdfs/v1") {
        (false, rest)
    } else if let Some(rest) = raw_path.strip_prefix("/datanode") {
        (true, rest)
    } else {
        (false, raw_path)
    };
    let path = hdfs_path.split('/').map(|s| percent_decode(s, false)).collect::<Vec<_>>().join("/");
    let raw_params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let params = raw_params
        .iter()
        .map(|(k, v)| (percent_decode(k, true), percent_decode(v, true)))
        .collect::<Vec<(String, String)>>();
    let op = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("op"))
        .map(|(_, v)| v.to_ascii_uppercase())
        .unwrap_or_default();
    let req = Req {
        method,
        datanode,
        raw,
        path,
        op,
        raw_params,
        params,
        content_length,
        chunked,
        body_len: body.len(),
    };
    Some((req, body))
}

fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream.try_clone().expect("cloning the socket"));
    let Some((req, body)) = read_request(&mut reader) else { return };
    shared.requests.lock().unwrap().push(req.clone());
    let action = {
        let mut faults = shared.faults.lock().unwrap();
        faults.iter_mut().find(|f| f.times > 0 && (f.when)(&req)).map(|f| {
            if f.times != ALWAYS {
                f.times -= 1;
            }
            f.action.clone()
        })
    };
    let mut stream = stream;
    let reply = match action {
        None => handle(shared, &req, &body, None),
        Some(Action::Status500) => Reply::remote(500, "IOException", "injected server error"),
        Some(Action::Reset) => return,
        Some(Action::LoseReply) => {
            let _ = handle(shared, &req, &body, None);
            return;
        }
        Some(Action::Delay) => {
            std::thread::sleep(Duration::from_millis(2500));
            return;
        }
        Some(Action::Stall) => {
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        Some(Action::ThenRemove(path)) => {
            let reply = handle(shared, &req, &body, None);
            if let Some(dir) = local(shared, &path) {
                let _ = std::fs::remove_dir_all(dir);
            }
            reply
        }
        Some(Action::Remote { status, exception, message }) => {
            Reply::remote(status, exception, &message)
        }
        Some(Action::False) => Reply::boolean(false),
        Some(action @ (Action::DeadDataNode | Action::Checksum(_) | Action::ChecksumAs(..))) => {
            handle(shared, &req, &body, Some(action))
        }
    };
    send(&mut stream, &reply);
}

/// The local path that holds HDFS path `path`; `None` for a path that is not absolute and
/// clean.
fn local(shared: &Shared, path: &str) -> Option<PathBuf> {
    let rel = path.strip_prefix('/')?;
    let mut out = shared.store.clone();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    let t = filetime::FileTime::from_last_modification_time(meta);
    t.unix_seconds() * 1000 + i64::from(t.nanoseconds() / 1_000_000)
}

fn file_status(name: &str, meta: &std::fs::Metadata, block_size: u64) -> serde_json::Value {
    let dir = meta.is_dir();
    serde_json::json!({
        "accessTime": if dir { 0 } else { mtime_ms(meta) },
        "blockSize": if dir { 0 } else { block_size },
        "childrenNum": 0,
        "fileId": 16386,
        "group": "supergroup",
        "length": if dir { 0 } else { meta.len() },
        "modificationTime": mtime_ms(meta),
        "owner": "alice",
        "pathSuffix": name,
        "permission": if dir { "755" } else { "644" },
        "replication": if dir { 0 } else { 3 },
        "storagePolicy": 0,
        "type": if dir { "DIRECTORY" } else { "FILE" },
    })
}

/// Where the NameNode sends a CREATE, OPEN or GETFILECHECKSUM: the same encoded path and
/// query on the fake's DataNode side (or on a dead port).
fn datanode_url(req: &Req, port: u16) -> String {
    let (path, query) = req.raw.split_once('?').unwrap_or((&req.raw, ""));
    let encoded = path.strip_prefix("/webhdfs/v1").unwrap_or(path);
    format!("http://127.0.0.1:{port}/datanode{encoded}?{query}&namenoderpcaddress=fake:8020")
}

fn handle(shared: &Shared, req: &Req, body: &[u8], action: Option<Action>) -> Reply {
    let Some(file) = local(shared, &req.path) else {
        return Reply::remote(400, "IllegalArgumentException", "Invalid path name");
    };
    let meta = std::fs::metadata(&file).ok();
    let block_size_of =
        |p: &str| shared.block_sizes.lock().unwrap().get(p).copied().unwrap_or(128 << 20);
    let dead = matches!(action, Some(Action::DeadDataNode));
    let datanode_port = if dead { dead_port() } else { shared.port };
    match (req.datanode, req.method.as_str(), req.op.as_str()) {
        (false, "GET", "GETFILESTATUS") => match meta {
            Some(m) => Reply::json(
                200,
                serde_json::json!({ "FileStatus": file_status("", &m, block_size_of(&req.path)) }),
            ),
            None => Reply::not_found(&req.path),
        },
        (false, "GET", "LISTSTATUS") => match meta {
            Some(m) if m.is_dir() => {
                let mut entries: Vec<_> =
                    std::fs::read_dir(&file).unwrap().map(|e| e.unwrap()).collect();
                entries.sort_by_key(|e| e.file_name());
                let statuses: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let child = format!("{}/{name}", req.path.trim_end_matches('/'));
                        file_status(&name, &e.metadata().unwrap(), block_size_of(&child))
                    })
                    .collect();
                Reply::json(200, serde_json::json!({ "FileStatuses": { "FileStatus": statuses } }))
            }
            Some(m) => Reply::json(
                200,
                serde_json::json!({ "FileStatuses": { "FileStatus": [
                    file_status("", &m, block_size_of(&req.path)) ] } }),
            ),
            None => Reply::not_found(&req.path),
        },
        (false, "PUT", "MKDIRS") => {
            // A file anywhere on the way is an error, as in HDFS.
            let mut at = file.clone();
            loop {
                if at.is_file() {
                    return Reply::remote(
                        403,
                        "ParentNotDirectoryException",
                        &format!("{} (is not a directory)", req.path),
                    );
                }
                if !at.pop() || at == shared.store {
                    break;
                }
            }
            std::fs::create_dir_all(&file).unwrap();
            Reply::boolean(true)
        }
        (false, "PUT", "CREATE") => {
            let location = datanode_url(req, datanode_port);
            if *shared.redirect_as_json.lock().unwrap() {
                Reply::json(200, serde_json::json!({ "Location": location }))
            } else {
                Reply::redirect(location)
            }
        }
        (true, "PUT", "CREATE") => {
            if meta.as_ref().is_some_and(|m| m.is_dir()) {
                return Reply::remote(
                    403,
                    "FileAlreadyExistsException",
                    &format!("{} already exists as a directory", req.path),
                );
            }
            if meta.is_some() && req.param("overwrite") != Some("true") {
                return Reply::remote(
                    403,
                    "FileAlreadyExistsException",
                    &format!("{} for client 127.0.0.1 already exists", req.path),
                );
            }
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, body).unwrap();
            if let Some(bs) = req.param("blocksize").and_then(|b| b.parse().ok()) {
                shared.block_sizes.lock().unwrap().insert(req.path.clone(), bs);
            }
            Reply {
                status: 201,
                headers: vec![("Location".into(), format!("hdfs://fake:8020{}", req.path))],
                body: Vec::new(),
            }
        }
        (false, "GET", "OPEN") | (false, "GET", "GETFILECHECKSUM") => match meta {
            Some(m) if m.is_file() => {
                match action {
                    Some(Action::Checksum(hex)) => {
                        return Reply::json(200, checksum_json(&hex));
                    }
                    Some(Action::ChecksumAs(algorithm, hex)) => {
                        return Reply::json(200, checksum_json_as(algorithm, &hex));
                    }
                    _ => {}
                }
                Reply::redirect(datanode_url(req, datanode_port))
            }
            Some(_) => Reply::remote(
                404,
                "FileNotFoundException",
                &format!("Path is not a file: {}", req.path),
            ),
            None => Reply::not_found(&req.path),
        },
        (true, "GET", "OPEN") => match std::fs::read(&file) {
            Ok(data) => {
                let offset: usize =
                    req.param("offset").and_then(|o| o.parse().ok()).unwrap_or(0).min(data.len());
                let mut end = data.len();
                if let Some(length) = req.param("length").and_then(|l| l.parse::<usize>().ok()) {
                    end = end.min(offset + length);
                }
                Reply {
                    status: 200,
                    headers: vec![("Content-Type".into(), "application/octet-stream".into())],
                    body: data[offset..end].to_vec(),
                }
            }
            Err(_) => Reply::not_found(&req.path),
        },
        (true, "GET", "GETFILECHECKSUM") => match std::fs::read(&file) {
            Ok(data) => {
                if let Some(Action::Checksum(hex)) = action {
                    return Reply::json(200, checksum_json(&hex));
                }
                if data.is_empty() {
                    // A file with no block: Hadoop's fixed answer (HDFS-level magic, not
                    // computed by redundo's code).
                    return Reply::json(
                        200,
                        checksum_json_as("MD5-of-0MD5-of-0CRC32", EMPTY_FILE_CHECKSUM),
                    );
                }
                let mut c =
                    redundo::record::hdfs_checksum::HdfsChecksummer::new(block_size_of(&req.path));
                c.update(&data);
                Reply::json(200, checksum_json(&c.finish().bytes))
            }
            Err(_) => Reply::not_found(&req.path),
        },
        (false, "PUT", "RENAME") => {
            let Some(destination) = req.param("destination") else {
                return Reply::remote(400, "IllegalArgumentException", "destination is missing");
            };
            let Some(mut to) = local(shared, destination) else {
                return Reply::remote(400, "IllegalArgumentException", "Invalid destination");
            };
            let mut to_hdfs = destination.to_string();
            if meta.is_none() {
                return Reply::boolean(false);
            }
            // HDFS's rename moves into an existing folder, and refuses to replace a file.
            if to.is_dir() {
                let name = file.file_name().unwrap();
                to = to.join(name);
                to_hdfs = format!("{to_hdfs}/{}", name.to_string_lossy());
            }
            if to.exists() || !to.parent().is_some_and(|p| p.is_dir()) {
                return Reply::boolean(false);
            }
            std::fs::rename(&file, &to).unwrap();
            let mut sizes = shared.block_sizes.lock().unwrap();
            if let Some(bs) = sizes.remove(&req.path) {
                sizes.insert(to_hdfs, bs);
            }
            Reply::boolean(true)
        }
        (false, "DELETE", "DELETE") => match meta {
            None => Reply::boolean(false),
            Some(m) if m.is_dir() => {
                let empty = std::fs::read_dir(&file).unwrap().next().is_none();
                if req.param("recursive") == Some("true") {
                    std::fs::remove_dir_all(&file).unwrap();
                } else if empty {
                    std::fs::remove_dir(&file).unwrap();
                } else {
                    return Reply::remote(
                        403,
                        "PathIsNotEmptyDirectoryException",
                        &format!("`{} is non empty': Directory is not empty", req.path),
                    );
                }
                Reply::boolean(true)
            }
            Some(_) => {
                std::fs::remove_file(&file).unwrap();
                Reply::boolean(true)
            }
        },
        (false, "PUT", "SETTIMES") => {
            if meta.is_none() {
                return Reply::not_found(&req.path);
            }
            if let Some(ms) = req.param("modificationtime").and_then(|m| m.parse::<i64>().ok())
                && ms != -1
            {
                let t = filetime::FileTime::from_unix_time(
                    ms.div_euclid(1000),
                    (ms.rem_euclid(1000) * 1_000_000) as u32,
                );
                filetime::set_file_mtime(&file, t).unwrap();
            }
            Reply::empty(200)
        }
        _ => Reply::remote(
            400,
            "IllegalArgumentException",
            &format!("Invalid value for webhdfs parameter \"op\": {} {}", req.method, req.op),
        ),
    }
}

fn checksum_json(hex: &str) -> serde_json::Value {
    checksum_json_as("MD5-of-0MD5-of-512CRC32C", hex)
}

fn checksum_json_as(algorithm: &str, hex: &str) -> serde_json::Value {
    serde_json::json!({ "FileChecksum": {
        "algorithm": algorithm, "bytes": hex, "length": 28 } })
}

/// What HDFS answers for a file with no block: `MD5MD5CRC32GzipFileChecksum(0, 0, md5 of 32
/// zero bytes)` (Hadoop's FileChecksumHelper).
const EMPTY_FILE_CHECKSUM: &str = "00000000000000000000000070bc8f4b72a86921468bf8e8441dce51";

// ---------------------------------------------------------------------------------------
// Workspaces
// ---------------------------------------------------------------------------------------

/// `redundo init` with a local target `t1` and the fake's `hdfs1`, then `extra` TOML keys
/// added to the `hdfs1` target (always `timeout = "1s"` and `user = "alice"`).
fn workspace(fake: &Fake, extra: &str) -> Env {
    let mut env = Env::bare();
    let location = fake.location();
    env.ok(&["init", "--source", "data", "--target", "t1", "--target", &location]);
    env.targets = vec!["t1".into()];
    let config = env.path("redundo.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&format!("name = \"{TARGET}\"")), "{text}");
    assert!(text.trim_end().ends_with(&format!("location = \"{location}\"")), "{text}");
    text.push_str(&format!("timeout = \"1s\"\nuser = \"alice\"\n{extra}\n"));
    std::fs::write(&config, text).unwrap();
    env
}

/// The lines of stdout that mention `needle`.
fn lines_with<'a>(run: &'a Run, needle: &str) -> Vec<&'a str> {
    run.stdout.lines().filter(|l| l.contains(needle)).collect()
}

/// Asserts stdout has exactly one line starting with `prefix` and containing every one of
/// `words`, and returns it.
fn one_line<'a>(run: &'a Run, prefix: &str, words: &[&str]) -> &'a str {
    let found: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with(prefix) && words.iter().all(|w| l.contains(w)))
        .collect();
    assert_eq!(found.len(), 1, "want one line `{prefix}...` with {words:?}: {run:?}");
    found[0]
}

/// Every stdout line is a report line: `<copy>: ...`, a summary, or a notice; no stray text
/// (a multi-line error would leave lines that start with neither).
fn assert_every_line_is_a_report_line(run: &Run) {
    for line in run.stdout.lines() {
        let known = ["source:", "t1:", "hdfs1:", "state:", "backup:", "verify (", "repair"];
        assert!(known.iter().any(|k| line.starts_with(k)), "stray stdout line {line:?}: {run:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Round trip and protocol
// ---------------------------------------------------------------------------------------

#[test]
fn backup_verify_fast_and_repair_round_trip_through_webhdfs() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    env.write("sub/deeper/b.bin", &bytes(1, 300_000));
    env.write("empty", b"");

    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("backup: generation 1"), "{run:?}");
    for rel in ["a.txt", "sub/deeper/b.bin", "empty"] {
        assert_eq!(std::fs::read(fake.file(rel)).unwrap(), env.read(&format!("data/{rel}")));
        assert_eq!(env.read(&format!("t1/{rel}")), env.read(&format!("data/{rel}")));
    }
    // The copy keeps the source's mtime, to the millisecond HDFS keeps.
    let src = std::fs::metadata(env.path("data/sub/deeper/b.bin")).unwrap();
    let copy = std::fs::metadata(fake.file("sub/deeper/b.bin")).unwrap();
    assert_eq!(mtime_ms(&copy), mtime_ms(&src));
    // The manifest replica and b3sums are on the HDFS target too.
    let files = fake.all_files();
    assert!(files.contains(&".redundo/manifest".to_string()), "{files:?}");
    assert!(fake.temporaries().is_empty(), "{files:?}");

    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK"), "{run:?}");
    let run = env.ok(&["verify", "--fast"]);
    assert!(run.stdout.contains("verify (fast): OK"), "{run:?}");
    // --fast asked HDFS for its checksum instead of downloading.
    let reqs = fake.requests();
    assert!(reqs.iter().any(|r| r.is("GETFILECHECKSUM")), "no GETFILECHECKSUM sent");
    let run = env.ok(&["repair"]);
    assert!(run.stdout.contains("repair:"), "{run:?}");

    // Bit rot on the HDFS copy: found by deep verify, healed by repair from the majority.
    flip_byte(&fake.file("sub/deeper/b.bin"), 1234);
    let run = env.expect(&["verify"], 1);
    one_line(&run, "hdfs1: sub/deeper/b.bin: CORRUPT:", &[]);
    let run = env.expect(&["verify", "--fast"], 1);
    one_line(&run, "hdfs1: sub/deeper/b.bin: CORRUPT:", &["HDFS file checksum"]);
    let run = env.ok(&["repair"]);
    assert!(run.stdout.contains("1 copy rewritten"), "{run:?}");
    assert_eq!(std::fs::read(fake.file("sub/deeper/b.bin")).unwrap(), bytes(1, 300_000));
    let quarantined: Vec<String> = fake
        .all_files()
        .into_iter()
        .filter(|f| f.starts_with(".redundo/quarantine/") && f.ends_with("sub/deeper/b.bin"))
        .collect();
    assert_eq!(quarantined.len(), 1, "the damaged copy is kept: {:?}", fake.all_files());
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK"), "{run:?}");
    assert!(fake.temporaries().is_empty(), "{:?}", fake.all_files());
}

fn assert_wire_details(fake: &Fake, env: &Env, json_redirect: bool) {
    fake.redirect_as_json(json_redirect);
    let name = "sub dir/a b#ü.bin";
    env.write(name, b"odd name\n");
    env.write("plain.txt", b"plain\n");
    fake.clear_requests();
    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("backup: generation 1"), "{run:?}");
    assert_eq!(std::fs::read(fake.file(name)).unwrap(), b"odd name\n");
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK"), "{run:?}");

    let reqs = fake.requests();
    let namenode: Vec<&Req> = reqs.iter().filter(|r| !r.datanode).collect();
    assert!(!namenode.is_empty());
    for r in &namenode {
        assert_eq!(r.raw_param("user.name"), Some("alice"), "user.name not sent: {}", r.raw);
        assert_eq!(r.raw_param("doas"), Some("bob"), "doas not sent: {}", r.raw);
        // Nothing outside unreserved characters and percent-escapes on the wire.
        assert!(
            r.raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%/?&=".contains(&b)),
            "unencoded character in {:?}",
            r.raw
        );
        for (key, value) in &r.params {
            if ["overwrite", "recursive", "noredirect"].contains(&key.as_str()) {
                assert!(value == "true" || value == "false", "{key}={value} in {}", r.raw);
            }
        }
    }
    let creates: Vec<&&Req> = namenode.iter().filter(|r| r.op == "CREATE").collect();
    assert!(creates.len() >= 2, "{creates:?}");
    for r in &creates {
        assert_eq!(r.method, "PUT");
        assert!(r.param("overwrite").is_some(), "CREATE without overwrite: {}", r.raw);
        assert!(r.param("permission").is_some(), "CREATE without permission: {}", r.raw);
        assert_eq!(r.body_len, 0, "CREATE's first step carried a body: {}", r.raw);
        assert!(!r.chunked && r.content_length.unwrap_or(0) == 0, "body on step 1: {r:?}");
    }
    for r in namenode.iter().filter(|r| r.op == "MKDIRS") {
        assert!(r.param("permission").is_some(), "MKDIRS without permission: {}", r.raw);
    }
    for r in namenode.iter().filter(|r| r.op == "DELETE") {
        assert!(r.param("recursive").is_some(), "DELETE without recursive: {}", r.raw);
    }
    // The odd name travels percent-encoded, and arrives intact.
    assert!(
        reqs.iter().any(|r| r.raw.contains("/sub%20dir/")),
        "no request for the encoded folder"
    );
    let rename = namenode
        .iter()
        .find(|r| r.op == "RENAME" && r.param("destination") == Some(&format!("{ROOT}/{name}")))
        .unwrap_or_else(|| panic!("no RENAME into {name:?}: {namenode:#?}"));
    assert!(
        rename.raw_param("destination").unwrap().contains("a%20b%23%C3%BC.bin"),
        "{}",
        rename.raw
    );
    assert!(
        reqs.iter().any(|r| r.raw.contains("a%20b%23%C3%BC.bin") && r.is("OPEN")),
        "verify did not OPEN the encoded name"
    );
    // The body went to the DataNode, in the second step.
    let uploads: Vec<&Req> =
        reqs.iter().filter(|r| r.datanode && r.op == "CREATE" && r.method == "PUT").collect();
    assert_eq!(uploads.len(), creates.len(), "every CREATE was followed by one upload");
    assert!(uploads.iter().any(|r| r.body_len == b"odd name\n".len()), "{uploads:?}");
    // The copy's mtime was set in milliseconds.
    let settimes: Vec<&&Req> = namenode.iter().filter(|r| r.op == "SETTIMES").collect();
    assert!(!settimes.is_empty());
    let src = std::fs::metadata(env.path(&format!("data/{name}"))).unwrap();
    assert!(
        settimes.iter().any(|r| r.param("modificationtime") == Some(&mtime_ms(&src).to_string())),
        "{settimes:?}"
    );
}

#[test]
fn wire_sends_explicit_params_and_percent_encoded_paths_with_a_307_create_redirect() {
    let fake = Fake::start();
    let env = workspace(&fake, "doas = \"bob\"");
    assert_wire_details(&fake, &env, false);
}

#[test]
fn wire_follows_a_create_redirect_given_as_a_200_json_location() {
    let fake = Fake::start();
    let env = workspace(&fake, "doas = \"bob\"");
    assert_wire_details(&fake, &env, true);
}

#[test]
fn init_creates_the_root_folder_over_webhdfs() {
    let fake = Fake::start();
    let _env = workspace(&fake, "");
    assert!(fake.shared.store.join(ROOT.trim_start_matches('/')).is_dir());
    let mkdirs = fake.requests().into_iter().find(|r| r.is("MKDIRS")).expect("no MKDIRS");
    assert_eq!(mkdirs.path, ROOT);
    assert_eq!(mkdirs.method, "PUT");
}

// ---------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------

#[test]
fn transient_500s_and_dropped_connections_are_retried_until_the_run_succeeds() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 2");
    env.write("a.txt", b"alpha\n");
    env.write("dir/b.txt", b"bravo\n");
    // Each kind of request fails twice, alternately with a 500 and a dropped connection.
    for op in ["GETFILESTATUS", "LISTSTATUS", "MKDIRS", "CREATE", "SETTIMES", "RENAME", "OPEN"] {
        fake.fault(1, Action::Status500, move |r| r.is(op));
        fake.fault(1, Action::Reset, move |r| r.is(op));
    }
    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("backup: generation 1"), "{run:?}");
    assert_eq!(std::fs::read(fake.file("dir/b.txt")).unwrap(), b"bravo\n");
    assert_eq!(fake.unfired(), 0, "some armed faults never fired");
    fake.fault(1, Action::Reset, |r| r.is("OPEN"));
    fake.fault(1, Action::Status500, |r| r.is("OPEN"));
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK"), "{run:?}");
    fake.fault(1, Action::Status500, |r| r.is("GETFILECHECKSUM"));
    fake.fault(1, Action::Reset, |r| r.is("GETFILECHECKSUM"));
    let run = env.ok(&["verify", "--fast"]);
    assert!(run.stdout.contains("verify (fast): OK"), "{run:?}");
    assert_eq!(fake.unfired(), 0, "some armed faults never fired");
    assert!(fake.temporaries().is_empty(), "{:?}", fake.all_files());
}

#[test]
fn a_4xx_is_never_retried_but_a_persistent_500_is_retried_exactly_retries_times() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 2");
    env.write("denied.txt", b"no\n");
    env.write("flaky.txt", b"maybe\n");
    env.write("fine.txt", b"yes\n");
    // Every CREATE is refused with 403, every time it is sent.
    fake.fault(
        ALWAYS,
        Action::Remote {
            status: 403,
            exception: "AccessControlException",
            message: "Permission denied: user=alice, access=WRITE".into(),
        },
        |r| r.is("CREATE"),
    );
    let run = env.expect(&["backup"], 3);
    let creates = fake.requests().iter().filter(|r| r.is("CREATE")).count();
    // Each CREATE names a fresh temporary, so a retry is the same path sent twice.
    let create_paths: Vec<String> =
        fake.requests().iter().filter(|r| r.is("CREATE")).map(|r| r.path.clone()).collect();
    let mut unique = create_paths.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), creates, "a 403 was retried: {create_paths:#?}");
    for name in ["denied.txt", "flaky.txt", "fine.txt"] {
        one_line(&run, &format!("hdfs1: {name}: WRITE FAILED:"), &["AccessControlException"]);
        assert!(env.path(&format!("t1/{name}")).is_file(), "local target lacks {name}");
    }

    // Now a persistent 500 on CREATE: each CREATE is sent 1 + retries times.
    fake.clear_faults();
    fake.clear_requests();
    fake.fault(ALWAYS, Action::Status500, |r| r.is("CREATE"));
    let run = env.expect(&["backup"], 3);
    let create_paths: Vec<String> =
        fake.requests().iter().filter(|r| r.is("CREATE")).map(|r| r.path.clone()).collect();
    let mut unique = create_paths.clone();
    unique.sort();
    unique.dedup();
    assert!(!unique.is_empty());
    for path in &unique {
        let n = create_paths.iter().filter(|p| *p == path).count();
        assert_eq!(n, 3, "CREATE of {path} sent {n} times, want 1 + retries = 3");
    }
    for name in ["denied.txt", "flaky.txt", "fine.txt"] {
        one_line(&run, &format!("hdfs1: {name}: WRITE FAILED:"), &["injected server error"]);
    }

    // A 403 on the root's GETFILESTATUS: the target is unreachable after one request.
    fake.clear_faults();
    fake.clear_requests();
    fake.fault(
        ALWAYS,
        Action::Remote {
            status: 403,
            exception: "AccessControlException",
            message: "Permission denied: user=alice, access=EXECUTE".into(),
        },
        |r| r.is("GETFILESTATUS") && r.path == ROOT,
    );
    let run = env.expect(&["backup"], 3);
    one_line(&run, "hdfs1: UNREACHABLE:", &["AccessControlException", "access=EXECUTE"]);
    let n = fake.requests().iter().filter(|r| r.is("GETFILESTATUS") && r.path == ROOT).count();
    assert_eq!(n, 1, "the root's GETFILESTATUS was sent {n} times after a 403");
}

// ---------------------------------------------------------------------------------------
// Failures: exit 3, one line naming the target (and file), the local target still served
// ---------------------------------------------------------------------------------------

fn assert_local_copies(env: &Env, names: &[&str]) {
    for name in names {
        assert_eq!(
            env.read(&format!("t1/{name}")),
            env.read(&format!("data/{name}")),
            "the local target lacks {name}"
        );
    }
}

#[test]
fn a_namenode_answering_500_to_everything_makes_the_target_unreachable_and_exit_3() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    fake.fault(ALWAYS, Action::Status500, |_| true);
    let run = env.expect(&["backup"], 3);
    let line = one_line(&run, "hdfs1: UNREACHABLE:", &[]);
    assert!(line.contains("500") || line.contains("IOException"), "{line}");
    assert_every_line_is_a_report_line(&run);
    assert_local_copies(&env, &["a.txt"]);
    // Nothing was written to the failing target.
    assert!(!fake.requests().iter().any(|r| r.is("CREATE")));
}

#[test]
fn a_namenode_not_listening_makes_the_target_unreachable_and_exit_3() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    let config = env.path("redundo.toml");
    let dead = dead_port();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&format!(":{}/", fake.port()), &format!(":{dead}/"));
    std::fs::write(&config, text).unwrap();
    let run = env.expect(&["backup"], 3);
    let line = one_line(&run, "hdfs1: UNREACHABLE:", &[&format!("127.0.0.1:{dead}")]);
    assert!(line.to_lowercase().contains("refused") || line.contains("connect"), "{line}");
    assert_every_line_is_a_report_line(&run);
    assert_local_copies(&env, &["a.txt"]);
    let run = env.expect(&["verify"], 3);
    one_line(&run, "hdfs1: UNREACHABLE:", &[]);
}

#[test]
fn a_persistent_500_on_create_fails_each_file_on_that_target_only() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    env.write("b/c.txt", b"charlie\n");
    fake.fault(ALWAYS, Action::Status500, |r| {
        r.is("CREATE") && !r.path.starts_with(&format!("{ROOT}/.redundo/"))
    });
    let run = env.expect(&["backup"], 3);
    one_line(&run, "hdfs1: a.txt: WRITE FAILED:", &[]);
    one_line(&run, "hdfs1: b/c.txt: WRITE FAILED:", &[]);
    assert_every_line_is_a_report_line(&run);
    assert_local_copies(&env, &["a.txt", "b/c.txt"]);
    assert!(!fake.file("a.txt").exists());
    assert!(fake.temporaries().is_empty(), "{:?}", fake.all_files());
    // Once the NameNode recovers, the next backup fills the gaps.
    fake.clear_faults();
    env.ok(&["backup"]);
    assert_eq!(std::fs::read(fake.file("b/c.txt")).unwrap(), b"charlie\n");
    env.ok(&["verify"]);
}

#[test]
fn a_dead_datanode_fails_the_upload_naming_target_and_file() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    env.write("big.bin", &bytes(7, 3 << 20));
    fake.fault(ALWAYS, Action::DeadDataNode, |r| {
        r.is("CREATE") && !r.path.starts_with(&format!("{ROOT}/.redundo/"))
    });
    let run = env.expect(&["backup"], 3);
    one_line(&run, "hdfs1: a.txt: WRITE FAILED:", &[]);
    one_line(&run, "hdfs1: big.bin: WRITE FAILED:", &[]);
    assert_every_line_is_a_report_line(&run);
    assert_local_copies(&env, &["a.txt", "big.bin"]);
    assert!(!fake.file("big.bin").exists());
    assert!(fake.temporaries().is_empty(), "{:?}", fake.all_files());
}

#[test]
fn a_dead_datanode_is_named_as_the_cause_even_for_a_large_upload() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 0");
    env.write("big.bin", &bytes(8, 3 << 20));
    fake.fault(ALWAYS, Action::DeadDataNode, |r| {
        r.is("CREATE") && !r.path.starts_with(&format!("{ROOT}/.redundo/"))
    });
    let run = env.expect(&["backup"], 3);
    let line = one_line(&run, "hdfs1: big.bin: WRITE FAILED:", &[]);
    // The operator must learn that the DataNode refused the connection, not a symptom of the
    // upload thread stopping.
    assert!(
        line.to_lowercase().contains("refused") || line.contains("connect"),
        "the cause (DataNode connection refused) is missing: {line}"
    );
}

#[test]
fn a_dead_datanode_on_open_makes_deep_verify_exit_3_naming_the_file() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    env.ok(&["backup"]);
    fake.fault(ALWAYS, Action::DeadDataNode, |r| {
        r.is("OPEN") && !r.path.starts_with(&format!("{ROOT}/.redundo/"))
    });
    let run = env.expect(&["verify"], 3);
    one_line(&run, "hdfs1: a.txt: READ FAILED:", &[]);
    assert_every_line_is_a_report_line(&run);
}

#[test]
fn a_remote_exception_becomes_one_line_with_its_name_and_message() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 2");
    env.write("a.txt", b"alpha\n");
    env.write("b.txt", b"bravo\n");
    fake.fault(
        ALWAYS,
        Action::Remote {
            status: 403,
            exception: "AccessControlException",
            message: "Permission denied: user=alice, access=WRITE,\n\tinode=\"/backups/hdfs1\":hdfs:supergroup:drwxr-xr-x".into(),
        },
        |r| r.is("CREATE"),
    );
    let run = env.expect(&["backup"], 3);
    let line = one_line(&run, "hdfs1: a.txt: WRITE FAILED:", &["AccessControlException"]);
    assert!(
        line.contains("Permission denied: user=alice, access=WRITE, inode=\"/backups/hdfs1\""),
        "{line}"
    );
    one_line(&run, "hdfs1: b.txt: WRITE FAILED:", &["AccessControlException"]);
    assert_every_line_is_a_report_line(&run);
    assert_local_copies(&env, &["a.txt", "b.txt"]);
    // A 403 is final: one CREATE per file, none repeated.
    let mut creates: Vec<String> =
        fake.requests().iter().filter(|r| r.is("CREATE")).map(|r| r.path.clone()).collect();
    let n = creates.len();
    creates.dedup();
    assert_eq!(creates.len(), n, "a 403 was retried");

    let run = env.run(&["backup", "--json"]);
    assert_eq!(run.code, 3, "{run:?}");
    let doc = run.json();
    let problem = doc["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["copy"] == TARGET && p["path"] == "a.txt")
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(problem["kind"], "write_failed");
    let detail = problem["detail"].as_str().unwrap();
    assert!(!detail.contains('\n') && detail.contains("AccessControlException"), "{detail}");
}

#[test]
fn a_namenode_slower_than_the_timeout_makes_the_target_unreachable_and_exit_3() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    fake.fault(ALWAYS, Action::Delay, |_| true);
    let run = env.expect(&["backup"], 3);
    let line = one_line(&run, "hdfs1: UNREACHABLE:", &[]);
    assert!(line.contains("timed out") || line.contains("timeout"), "{line}");
    assert_every_line_is_a_report_line(&run);
    assert_local_copies(&env, &["a.txt"]);
}

#[test]
fn a_create_slower_than_the_timeout_fails_that_file_with_exit_3() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 0");
    env.write("a.txt", b"alpha\n");
    env.write("b.txt", b"bravo\n");
    fake.fault(ALWAYS, Action::Delay, |r| {
        r.is("CREATE") && r.path.starts_with(ROOT) && !r.path.contains("/.redundo/")
    });
    let run = env.expect(&["backup"], 3);
    one_line(&run, "hdfs1: a.txt: WRITE FAILED:", &[]);
    one_line(&run, "hdfs1: b.txt: WRITE FAILED:", &[]);
    assert_every_line_is_a_report_line(&run);
    assert_local_copies(&env, &["a.txt", "b.txt"]);
}

// ---------------------------------------------------------------------------------------
// No false success
// ---------------------------------------------------------------------------------------

#[test]
fn a_rename_answering_false_is_a_failed_install_not_a_success() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    env.write("b.txt", b"bravo\n");
    let final_a = format!("{ROOT}/a.txt");
    fake.fault(ALWAYS, Action::False, move |r| {
        r.is("RENAME") && r.param("destination") == Some(final_a.as_str())
    });
    let run = env.expect(&["backup"], 3);
    let line = one_line(&run, "hdfs1: a.txt: WRITE FAILED:", &[]);
    assert!(line.contains("RENAME"), "{line}");
    assert_every_line_is_a_report_line(&run);
    assert!(!fake.file("a.txt").exists());
    assert_eq!(std::fs::read(fake.file("b.txt")).unwrap(), b"bravo\n");
    assert!(fake.temporaries().is_empty(), "{:?}", fake.all_files());
    assert_local_copies(&env, &["a.txt", "b.txt"]);
    // The HDFS copy is not counted as made: verify finds it missing there.
    let run = env.expect(&["verify"], 1);
    one_line(&run, "hdfs1: a.txt: MISSING:", &[]);
    // And the next backup, with RENAME working again, makes it.
    fake.clear_faults();
    env.ok(&["backup"]);
    assert_eq!(std::fs::read(fake.file("a.txt")).unwrap(), b"alpha\n");
    env.ok(&["verify"]);
}

#[test]
fn a_refused_rename_over_a_changed_file_keeps_the_old_copy_in_place_and_exits_3() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"old\n");
    env.ok(&["backup"]);
    std::thread::sleep(Duration::from_millis(20));
    env.write("a.txt", b"new content\n");
    let final_a = format!("{ROOT}/a.txt");
    // The old copy moves aside; the new one's rename into place is refused (once: moving
    // the old copy back is allowed).
    fake.fault(1, Action::False, move |r| {
        r.is("RENAME") && r.param("destination") == Some(final_a.as_str())
    });
    let run = env.expect(&["backup"], 3);
    one_line(&run, "hdfs1: a.txt: WRITE FAILED:", &[]);
    // Whatever failed, the final name still holds a whole copy (the old one).
    assert_eq!(std::fs::read(fake.file("a.txt")).unwrap(), b"old\n");
    assert!(fake.temporaries().is_empty(), "{:?}", fake.all_files());
    assert_eq!(env.read("t1/a.txt"), b"new content\n");
    let run = env.expect(&["verify"], 1);
    assert!(
        lines_with(&run, "hdfs1: a.txt:")
            .iter()
            .any(|l| l.contains("WRONG SIZE") || l.contains("CORRUPT")),
        "{run:?}"
    );
    fake.clear_faults();
    env.ok(&["backup"]);
    assert_eq!(std::fs::read(fake.file("a.txt")).unwrap(), b"new content\n");
    env.ok(&["verify"]);
}

#[test]
fn a_lost_reply_to_a_rename_never_leaves_the_final_name_empty() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 2");
    env.write("a.txt", b"old\n");
    env.ok(&["backup"]);
    std::thread::sleep(Duration::from_millis(20));
    env.write("a.txt", b"new content\n");
    // The old copy is moved aside, but the reply is lost: the retry finds nothing to move.
    let final_a = format!("{ROOT}/a.txt");
    fake.fault(1, Action::LoseReply, move |r| r.is("RENAME") && r.path == final_a);
    let run = env.run(&["backup"]);
    let held = std::fs::read(fake.file("a.txt"));
    assert!(
        matches!(held.as_deref(), Ok(b"new content\n") | Ok(b"old\n")),
        "after a lost RENAME reply {ROOT}/a.txt holds {held:?}: {run:?}\nfiles: {:?}",
        fake.all_files()
    );
    if run.code == 0 {
        assert_eq!(held.unwrap(), b"new content\n");
    } else {
        assert_eq!(run.code, 3, "{run:?}");
        one_line(&run, "hdfs1: a.txt: WRITE FAILED:", &[]);
    }
}

#[test]
fn a_file_name_with_a_colon_is_refused_by_name_and_the_others_are_copied() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("ok.txt", b"fine\n");
    env.write("dir/12:30 notes.txt", b"colon\n");
    let run = env.expect(&["backup"], 3);
    let line = one_line(&run, "hdfs1: dir/12:30 notes.txt: WRITE FAILED:", &[]);
    assert!(line.contains("':'"), "{line}");
    assert_every_line_is_a_report_line(&run);
    assert_eq!(std::fs::read(fake.file("ok.txt")).unwrap(), b"fine\n");
    assert_local_copies(&env, &["ok.txt", "dir/12:30 notes.txt"]);
    // Nothing with the colon name was ever sent.
    assert!(
        !fake.requests().iter().any(|r| r.path.contains(':') || r.raw.contains("%3A")),
        "a request named the colon file"
    );
}

// ---------------------------------------------------------------------------------------
// verify --fast with HDFS checksums
// ---------------------------------------------------------------------------------------

#[test]
fn verify_fast_reports_a_checksum_that_differs_from_the_recorded_one_as_corrupt() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    env.write("b.txt", b"bravo\n");
    env.ok(&["backup"]);
    let run = env.ok(&["verify", "--fast"]);
    assert!(run.stdout.contains("verify (fast): OK"), "{run:?}");

    let bogus = format!("00000200{:016x}{}", 0, "ab".repeat(16));
    let target = format!("{ROOT}/a.txt");
    fake.fault(ALWAYS, Action::Checksum(bogus.clone()), move |r| {
        r.op == "GETFILECHECKSUM" && r.path == target
    });
    let run = env.expect(&["verify", "--fast"], 1);
    let line = one_line(&run, "hdfs1: a.txt: CORRUPT:", &["HDFS file checksum"]);
    assert!(line.contains(&bogus), "{line}");
    assert!(lines_with(&run, "b.txt").is_empty(), "{run:?}");
    assert!(run.stdout.contains("verify (fast): PROBLEMS FOUND"), "{run:?}");
    // The bytes are fine: a deep verify, which reads them, agrees.
    env.ok(&["verify"]);
}

#[test]
fn verify_fast_accepts_a_checksum_equal_to_the_recorded_one() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1\nblock_size = 1048576");
    let big = bytes(3, (5 << 20) / 2);
    env.write("big.bin", &big);
    env.write("empty", b"");
    env.ok(&["backup"]);
    // The checksum HDFS would give for these bytes and that block size, with a longer
    // `bytes` than `length` (as some versions send) and in upper case.
    let mut c = redundo::record::hdfs_checksum::HdfsChecksummer::new(1 << 20);
    c.update(&big);
    let hex = c.finish().bytes.to_uppercase();
    let target = format!("{ROOT}/big.bin");
    fake.fault(ALWAYS, Action::Checksum(hex), move |r| {
        r.op == "GETFILECHECKSUM" && r.path == target
    });
    fake.clear_requests();
    let run = env.ok(&["verify", "--fast"]);
    assert!(run.stdout.contains("verify (fast): OK"), "{run:?}");
    let reqs = fake.requests();
    assert!(reqs.iter().any(|r| r.op == "GETFILECHECKSUM" && r.path.ends_with("/big.bin")));
    // No data was downloaded for the check.
    assert!(
        !reqs.iter().any(|r| r.op == "OPEN" && !r.path.contains("/.redundo/")),
        "--fast downloaded a copy"
    );
}

// ---------------------------------------------------------------------------------------
// Atomic replace
// ---------------------------------------------------------------------------------------

#[test]
fn a_changed_file_is_replaced_atomically_and_no_temporaries_are_left() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"first version\n");
    env.write("keep.txt", b"unchanged\n");
    env.ok(&["backup"]);
    std::thread::sleep(Duration::from_millis(20));
    env.write("a.txt", b"second, longer version\n");
    fake.clear_requests();
    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("1 changed"), "{run:?}");
    assert_eq!(std::fs::read(fake.file("a.txt")).unwrap(), b"second, longer version\n");
    assert_eq!(std::fs::read(fake.file("keep.txt")).unwrap(), b"unchanged\n");
    assert!(fake.temporaries().is_empty(), "{:?}", fake.all_files());

    // Never written in place: the new bytes went to a temporary, and the final name was only
    // ever the source or destination of a RENAME (no CREATE, no overwrite=true, no DELETE).
    let final_a = format!("{ROOT}/a.txt");
    for r in fake.requests().iter().filter(|r| !r.datanode) {
        if r.path == final_a {
            assert!(
                ["GETFILESTATUS", "RENAME"].contains(&r.op.as_str()),
                "{} on the final name",
                r.op
            );
        }
        // redundo's own state (the temporaries journal) is not a copy.
        if r.op == "CREATE" && !r.path.starts_with(&format!("{ROOT}/.redundo/temporaries/")) {
            assert!(r.path.contains(".redundo-tmp-"), "CREATE not to a temporary: {}", r.path);
            assert_eq!(r.param("overwrite"), Some("false"), "{}", r.raw);
        }
    }
    let run = env.ok(&["verify"]);
    assert!(run.stdout.contains("verify (deep): OK"), "{run:?}");
}

// ---------------------------------------------------------------------------------------
// More faults: the root folder, folders in the way, stalls, DataNode hiccups
// ---------------------------------------------------------------------------------------

#[test]
fn a_missing_root_folder_is_unreachable_and_never_recreated() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    let root = fake.shared.store.join(ROOT.trim_start_matches('/'));
    std::fs::remove_dir_all(&root).unwrap();
    fake.clear_requests();
    let run = env.expect(&["backup"], 3);
    one_line(&run, "hdfs1: UNREACHABLE:", &[ROOT]);
    assert!(!root.exists(), "backup recreated the missing root {ROOT}");
    assert!(!fake.requests().iter().any(|r| r.is("MKDIRS") || r.is("CREATE")));
    assert_local_copies(&env, &["a.txt"]);
}

#[test]
fn a_root_folder_removed_during_the_run_is_not_recreated() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    env.write("b.txt", b"bravo\n");
    // The root is deleted right after backup walked it, before any copy is staged.
    fake.fault(1, Action::ThenRemove(ROOT.to_string()), |r| r.is("LISTSTATUS") && r.path == ROOT);
    let run = env.run(&["backup"]);
    assert_eq!(fake.unfired(), 0);
    let root = fake.shared.store.join(ROOT.trim_start_matches('/'));
    assert!(
        !root.exists(),
        "backup recreated the root folder that vanished mid-run; it now holds {:?}\n{run:?}",
        fake.all_files()
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        lines_with(&run, "hdfs1:")
            .iter()
            .any(|l| l.contains("FAILED") || l.contains("UNREACHABLE")),
        "{run:?}"
    );
    assert_local_copies(&env, &["a.txt", "b.txt"]);
}

#[test]
fn a_folder_standing_where_a_copy_goes_is_moved_aside_with_its_bytes_kept() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    env.write("b.txt", b"bravo\n");
    // Someone else's folder (with data) sits at the name the copy would take.
    std::fs::create_dir_all(fake.file("a.txt")).unwrap();
    std::fs::write(fake.file("a.txt/theirs.csv"), b"precious\n").unwrap();
    let run = env.run(&["backup"]);
    assert_eq!(run.code, 0, "{run:?}");
    let kept: Vec<String> =
        fake.all_files().into_iter().filter(|f| f.ends_with("/a.txt/theirs.csv")).collect();
    assert!(
        kept.len() == 1 && kept[0].starts_with(".redundo/quarantine/"),
        "the folder's file is kept in the quarantine: {:?}",
        fake.all_files()
    );
    assert_eq!(std::fs::read(fake.file(&kept[0])).unwrap(), b"precious\n");
    one_line(&run, "hdfs1: a.txt: done: the source now has something else in this place", &[]);
    assert_eq!(std::fs::read(fake.file("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(std::fs::read(fake.file("b.txt")).unwrap(), b"bravo\n");
    assert_local_copies(&env, &["a.txt", "b.txt"]);
}

/// Runs redundo, killing it if it has not finished after `limit` (a hang, not a timing).
fn run_or_kill(env: &Env, args: &[&str], limit: Duration) -> Option<Run> {
    use std::process::Stdio;
    let mut child = env
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running redundo");
    let start = std::time::Instant::now();
    let finished = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    finished.then(|| Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[test]
fn an_open_that_never_answers_is_given_up_after_the_timeout() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 0");
    env.write("a.txt", b"alpha\n");
    env.ok(&["backup"]);
    let path = format!("{ROOT}/a.txt");
    fake.fault(ALWAYS, Action::Stall, move |r| r.op == "OPEN" && r.path == path);
    // timeout = "1s": a run that is still waiting 8 s later waits forever.
    let run = run_or_kill(&env, &["verify"], Duration::from_secs(8))
        .expect("verify hung on an OPEN that never answered (timeout = \"1s\")");
    assert_eq!(run.code, 3, "{run:?}");
    one_line(&run, "hdfs1: a.txt: READ FAILED:", &[]);
}

#[test]
fn an_upload_that_never_answers_is_given_up_after_the_timeout() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 0");
    env.write("a.txt", b"alpha\n");
    env.write("b.txt", b"bravo\n");
    fake.fault(ALWAYS, Action::Stall, |r| {
        r.datanode && r.op == "CREATE" && !r.path.contains("/.redundo/")
    });
    let run = run_or_kill(&env, &["backup"], Duration::from_secs(8))
        .expect("backup hung on a DataNode that never answered the upload (timeout = \"1s\")");
    assert_eq!(run.code, 3, "{run:?}");
    one_line(&run, "hdfs1: a.txt: WRITE FAILED:", &[]);
    assert_local_copies(&env, &["a.txt", "b.txt"]);
}

#[test]
fn a_datanode_failure_mid_upload_is_reported_and_the_next_backup_fills_the_gap() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 2");
    env.write("a.txt", b"alpha\n");
    // A streamed body cannot be sent twice (the source is read once for every target), so a
    // DataNode failure mid-upload fails that copy, and the next backup fills the gap.
    fake.fault(1, Action::Status500, |r| {
        r.datanode && r.op == "CREATE" && !r.path.contains("/.redundo/")
    });
    let run = env.expect(&["backup"], 3);
    assert_eq!(fake.unfired(), 0);
    one_line(&run, "hdfs1: a.txt: WRITE FAILED:", &[]);
    let run = env.ok(&["backup"]);
    assert!(run.stdout.contains("1 gap filled"), "{run:?}");
    assert_eq!(std::fs::read(fake.file("a.txt")).unwrap(), b"alpha\n");
}

#[test]
fn verify_fast_does_not_call_a_copy_corrupt_when_hdfs_uses_another_checksum_algorithm() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.txt", b"alpha\n");
    env.ok(&["backup"]);
    // A cluster with dfs.checksum.type = CRC32: same layout, other CRCs, other MD5.
    let path = format!("{ROOT}/a.txt");
    let crc32_value = format!("00000200{:016x}{}", 0, "5d".repeat(16));
    fake.fault(ALWAYS, Action::ChecksumAs("MD5-of-0MD5-of-512CRC32", crc32_value), move |r| {
        r.op == "GETFILECHECKSUM" && r.path == path
    });
    let run = env.run(&["verify", "--fast"]);
    assert!(
        lines_with(&run, "CORRUPT").is_empty() && run.code != 1,
        "a checksum of another algorithm was compared as if it were CRC32C: {run:?}"
    );
    // The bytes are intact.
    env.ok(&["verify"]);
}

#[test]
fn hdfs_checksum_matches_known_hadoop_values() {
    use redundo::record::hdfs_checksum::HdfsChecksummer;
    let sum = |data: &[&[u8]], block_size: u64| {
        let mut c = HdfsChecksummer::new(block_size);
        for piece in data {
            c.update(piece);
        }
        c.finish().bytes
    };
    // Hadoop's magic for a file with no block.
    assert_eq!(sum(&[], 128 << 20), EMPTY_FILE_CHECKSUM);
    // "world\n" in one block: MD5MD5CRC32CastagnoliFileChecksum(512, 0, a74dcf6d...).
    assert_eq!(
        sum(&[b"world\n"], 128 << 20),
        "000002000000000000000000a74dcf6d5ba98e50ae0182c9d5d886fe"
    );
    // 153,600,000 zero bytes in two 128 MiB blocks: crcPerBlock 262144.
    let zeros = vec![0u8; 1_024_000];
    let pieces: Vec<&[u8]> = (0..150).map(|_| &zeros[..]).collect();
    assert_eq!(sum(&pieces, 128 << 20), "0000020000000000000400007d04ac8132ad64988f7ba4d819cbde62");
}

#[test]
fn a_copy_named_like_a_temporary_is_kept_on_hdfs_as_the_user_named_it() {
    let fake = Fake::start();
    let env = workspace(&fake, "");
    // Named as a temporary of a process that no longer runs, but it is the user's file.
    let name = ".redundo-tmp-4194303-0";
    env.write(name, b"user data");
    env.ok(&["backup"]);
    env.ok(&["backup"]);
    assert_eq!(std::fs::read(fake.file(name)).unwrap(), b"user data", "removed as a leftover");
    env.ok(&["verify"]);
}

// ---------------------------------------------------------------------------------------
// Names HDFS cannot hold, a target that stops answering, what error lines carry
// ---------------------------------------------------------------------------------------

/// [`workspace`] with `jobs = 1`, so files are taken one at a time and the requests the fake
/// sees can be counted exactly.
fn one_at_a_time(fake: &Fake, extra: &str) -> Env {
    let env = workspace(fake, extra);
    let config = env.path("redundo.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("jobs = 1\n{text}")).unwrap();
    env
}

/// The data requests (not to the state folder) that the NameNode side of the fake saw for `op`.
fn data_requests(fake: &Fake, op: &str) -> usize {
    let state = format!("{ROOT}/.redundo/");
    fake.requests().iter().filter(|r| r.is(op) && !r.path.starts_with(&state)).count()
}

fn assert_no_rest_urls(run: &Run) {
    for bad in ["http://", "/webhdfs/v1", "user.name="] {
        assert!(!run.stdout.contains(bad), "a REST URL ({bad}) in the report: {run:?}");
    }
}

#[test]
fn names_with_a_percent_sign_are_refused_before_upload_and_repair_does_not_loop_on_them() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("ok.txt", b"fine\n");
    env.write("x%41.txt", b"would land as xA.txt\n");
    env.write("pct%.txt", b"refused by the DataNode\n");
    env.write("x%2Fy/f.txt", b"would land in x/y/\n");
    let refused = ["x%41.txt", "pct%.txt", "x%2Fy/f.txt"];
    let run = env.expect(&["backup"], 3);
    for name in refused {
        let line = one_line(&run, &format!("hdfs1: {name}: WRITE FAILED:"), &[]);
        assert!(line.contains("HDFS cannot hold a name with '%'"), "{line}");
    }
    assert_every_line_is_a_report_line(&run);
    assert_eq!(std::fs::read(fake.file("ok.txt")).unwrap(), b"fine\n");
    assert_local_copies(&env, &["ok.txt", "x%41.txt", "pct%.txt", "x%2Fy/f.txt"]);
    // Nothing of theirs was ever sent: no CREATE, OPEN or RENAME names a '%' (sent as %25).
    let sent: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.path.contains('%') && r.op != "MKDIRS" && r.op != "SETTIMES")
        .map(|r| r.raw.clone())
        .collect();
    assert!(sent.is_empty(), "requests for the refused files: {sent:#?}");
    let held: Vec<String> =
        fake.all_files().into_iter().filter(|f| !f.starts_with(".redundo/")).collect();
    assert_eq!(held, ["ok.txt"], "only the name HDFS can hold is on the target");

    // verify says why they are missing; repair cannot help and says so, and does not
    // quarantine or rewrite anything, however often it runs.
    let run = env.expect(&["verify"], 1);
    for name in refused {
        one_line(&run, &format!("hdfs1: {name}: MISSING:"), &["'%'", "no run can copy it there"]);
    }
    for _ in 0..2 {
        let before = fake.all_files();
        let run = env.expect(&["repair"], 3);
        for name in refused {
            one_line(&run, &format!("hdfs1: {name}: WRITE FAILED:"), &["'%'"]);
        }
        assert!(lines_with(&run, "done:").is_empty(), "{run:?}");
        let quarantined: Vec<String> =
            fake.all_files().into_iter().filter(|f| f.contains("quarantine")).collect();
        assert!(quarantined.is_empty(), "repair quarantined: {quarantined:?}");
        let after: Vec<String> =
            fake.all_files().into_iter().filter(|f| !f.starts_with(".redundo/")).collect();
        let before: Vec<String> =
            before.into_iter().filter(|f| !f.starts_with(".redundo/")).collect();
        assert_eq!(after, before, "repair changed the target");
    }
}

#[test]
fn a_dead_datanode_stops_the_uploads_after_three_files_with_one_unreachable_line() {
    let fake = Fake::start();
    let env = one_at_a_time(&fake, "retries = 1");
    let names: Vec<String> = (0..8).map(|n| format!("f{n}.txt")).collect();
    for name in &names {
        env.write(name, name.as_bytes());
    }
    fake.fault(ALWAYS, Action::DeadDataNode, |r| {
        r.is("CREATE") && !r.path.starts_with(&format!("{ROOT}/.redundo/"))
    });
    let run = env.expect(&["backup"], 3);
    let line = one_line(&run, "hdfs1: UNREACHABLE:", &["DataNode", "3 times in a row"]);
    assert!(line.to_lowercase().contains("refused"), "the cause is missing: {line}");
    // Three files failed, each after its own attempt; the other five were never tried.
    assert_eq!(lines_with(&run, "WRITE FAILED").len(), 3, "{run:?}");
    assert_eq!(data_requests(&fake, "CREATE"), 3, "uploads tried after the target was down");
    assert_every_line_is_a_report_line(&run);
    assert_no_rest_urls(&run);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_local_copies(&env, &refs);

    // The DataNode is back: the next backup fills every gap.
    fake.clear_faults();
    let run = env.ok(&["backup"]);
    assert!(lines_with(&run, "hdfs1:").iter().all(|l| !l.contains("UNREACHABLE")), "{run:?}");
    for name in &names {
        assert_eq!(std::fs::read(fake.file(name)).unwrap(), name.as_bytes());
    }
    env.ok(&["verify"]);
}

#[test]
fn a_dead_datanode_stops_a_deep_verify_after_three_files_with_one_unreachable_line() {
    let fake = Fake::start();
    let env = one_at_a_time(&fake, "retries = 2");
    for n in 0..8 {
        env.write(&format!("f{n}.txt"), format!("file {n}").as_bytes());
    }
    env.ok(&["backup"]);
    fake.clear_requests();
    fake.fault(ALWAYS, Action::DeadDataNode, |r| {
        r.is("OPEN") && !r.path.starts_with(&format!("{ROOT}/.redundo/"))
    });
    let run = env.expect(&["verify"], 3);
    one_line(&run, "hdfs1: UNREACHABLE:", &["DataNode", "3 times in a row"]);
    assert_eq!(lines_with(&run, "hdfs1: f").len(), 3, "{run:?}");
    // The NameNode was asked for each of the three once (the DataNode it redirects to was
    // tried 1 + retries times); for the other five, not at all.
    assert_eq!(data_requests(&fake, "OPEN"), 3, "OPENs sent after the target was down");
    assert_no_rest_urls(&run);
    assert_every_line_is_a_report_line(&run);

    // --fast stops the same way on a NameNode that fails every GETFILECHECKSUM.
    fake.clear_faults();
    fake.clear_requests();
    fake.fault(ALWAYS, Action::Status500, |r| r.is("GETFILECHECKSUM"));
    let run = env.expect(&["verify", "--fast"], 3);
    one_line(&run, "hdfs1: UNREACHABLE:", &["NameNode", "3 times in a row", "IOException"]);
    // Three files, each asked 1 + retries times; the other five not at all.
    assert_eq!(data_requests(&fake, "GETFILECHECKSUM"), 3 * 3, "{run:?}");
}

#[test]
fn a_java_stack_trace_in_an_hdfs_error_never_reaches_the_report() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 0");
    env.write("a.txt", b"alpha\n");
    let frames: String = (0..40)
        .map(|n| format!("\n\tat org.apache.hadoop.hdfs.server.namenode.FSNamesystem.f{n}(FSNamesystem.java:{n})"))
        .collect();
    fake.fault(
        ALWAYS,
        Action::Remote {
            status: 403,
            exception: "RemoteException",
            message: format!("File {ROOT}/a.txt could only be replicated to 0 nodes{frames}"),
        },
        |r| r.datanode && r.op == "CREATE",
    );
    let run = env.expect(&["backup"], 3);
    let line = one_line(&run, "hdfs1: a.txt: WRITE FAILED:", &["could only be replicated"]);
    // The class as Java names it, the message, and no frame.
    assert!(line.contains("org.apache.hadoop.hdfs.protocol.RemoteException: File"), "{line}");
    assert!(!line.contains("FSNamesystem.java") && !line.contains("\tat"), "{line}");
    assert!(line.len() < 400, "{} bytes: {line}", line.len());
    assert_every_line_is_a_report_line(&run);
}

#[test]
fn quarantined_copies_are_reported_at_their_hdfs_path_not_a_rest_url() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.bin", &bytes(4, 5000));
    env.ok(&["backup"]);
    flip_byte(&fake.file("a.bin"), 100);
    let run = env.ok(&["repair", "--json"]);
    let doc = run.json();
    let action = doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["copy"] == TARGET)
        .unwrap_or_else(|| panic!("{doc}"));
    let kept = action["quarantined_to"].as_str().unwrap();
    let want = format!("webhdfs://127.0.0.1:{}{ROOT}/.redundo/quarantine/", fake.port());
    assert!(kept.starts_with(&want) && kept.ends_with("/a.bin"), "{kept}");
    let rel = kept.strip_prefix(&format!("webhdfs://127.0.0.1:{}{ROOT}/", fake.port())).unwrap();
    assert!(fake.file(rel).is_file(), "nothing at {kept}");
}

#[test]
fn temporaries_a_killed_run_left_in_the_state_folder_are_removed() {
    let fake = Fake::start();
    let env = workspace(&fake, "retries = 1");
    env.write("a.bin", &bytes(5, 3000));
    env.ok(&["backup"]);
    // A killed run (a pid no process has) recorded in the journal left a replica temporary
    // and a notes temporary; a live process (pid 1) and an unrecorded dead one left theirs.
    let dead = 4_194_303;
    let state = fake.file(".redundo");
    std::fs::create_dir_all(state.join("temporaries")).unwrap();
    std::fs::create_dir_all(state.join("quarantine")).unwrap();
    for pid in [dead, 1] {
        std::fs::write(state.join("temporaries").join(pid.to_string()), b"").unwrap();
    }
    let planted = [
        (format!(".redundo/.redundo-tmp-{dead}-0"), false),
        (format!(".redundo/quarantine/.redundo-tmp-{dead}-1"), false),
        (".redundo/.redundo-tmp-1-0".to_string(), true),
        (".redundo/.redundo-tmp-4194302-0".to_string(), true),
    ];
    for (name, _) in &planted {
        std::fs::write(fake.file(name), b"half a replica").unwrap();
    }
    // A repair keeps a damaged copy (its notes are written in quarantine/), and a backup of
    // a change writes the replicas.
    flip_byte(&fake.file("a.bin"), 7);
    env.ok(&["repair"]);
    env.write("b.txt", b"new\n");
    env.ok(&["backup"]);
    for (name, stays) in &planted {
        assert_eq!(fake.file(name).exists(), *stays, "{name}: {:?}", fake.all_files());
    }
}

#[test]
fn a_target_that_stops_answering_during_repair_is_no_longer_read_from() {
    let fake = Fake::start();
    let env = one_at_a_time(&fake, "retries = 1");
    let names: Vec<String> = (0..8).map(|n| format!("f{n}.bin")).collect();
    for (n, name) in names.iter().enumerate() {
        env.write(name, &bytes(n as u64, 3000));
    }
    env.ok(&["backup"]);
    for name in &names {
        flip_byte(&env.path(&format!("t1/{name}")), 10);
    }
    // The DataNode dies after repair's inspection read every copy once: the good bytes repair
    // reads from hdfs1 (a target, so preferred) stop coming.
    let opens = std::sync::atomic::AtomicUsize::new(0);
    let state = format!("{ROOT}/.redundo/");
    fake.fault(ALWAYS, Action::DeadDataNode, move |r| {
        r.is("OPEN")
            && !r.path.starts_with(&state)
            && opens.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 8
    });
    let run = env.expect(&["repair"], 3);
    one_line(&run, "hdfs1: UNREACHABLE:", &["DataNode"]);
    // Three files could not be read from hdfs1; after that the source served the rest.
    let unread = lines_with(&run, "READ FAILED").len();
    assert_eq!(unread, 3, "{run:?}");
    assert_eq!(lines_with(&run, "t1: f").iter().filter(|l| l.contains("done:")).count(), 5);
    fake.clear_faults();
    let run = env.expect(&["verify"], 1);
    assert_eq!(lines_with(&run, "t1: f").len(), 3, "{run:?}");
}
