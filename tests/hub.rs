//! Hub downloads against a loopback HTTP server that speaks the hub's `resolve` protocol
//! (HEAD/GET, ETag, X-Repo-Commit, Content-Length, Range). Nothing leaves 127.0.0.1, and no
//! environment variable is touched: endpoint and cache are passed through `HubOptions`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candle_core::{DType, Device};
use sha2::{Digest, Sha256};
use unmask::hub::{self, Hub, HubOptions, Need, Progress};
use unmask::model::DiffusionModel;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const MAX_CONNECTIONS: usize = 256;

struct Repo {
    files: HashMap<String, Vec<u8>>,
    /// Sent instead of the real ETag / commit (a hostile server).
    etag: Option<String>,
    commit: Option<String>,
}

struct Shared {
    repos: HashMap<String, Repo>,
    /// Body bytes sent per file name.
    served: Mutex<HashMap<String, u64>>,
    /// The next GET of this file sends only this many body bytes, then stalls.
    stall: Mutex<Option<(String, usize)>>,
    stop: AtomicBool,
}

/// A small hub stand-in. `test/private` always answers 401; unknown repos 404.
struct Server {
    shared: Arc<Shared>,
    endpoint: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(repos: HashMap<String, Repo>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            repos,
            served: Mutex::new(HashMap::new()),
            stall: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let connections = AtomicUsize::new(0);
            std::thread::scope(|scope| {
                while !s.stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _))
                            if connections.fetch_add(1, Ordering::Relaxed) < MAX_CONNECTIONS =>
                        {
                            let s = &s;
                            scope.spawn(move || serve(stream, s));
                        }
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        });
        Server {
            shared,
            endpoint,
            thread: Some(thread),
        }
    }

    fn served(&self, file: &str) -> u64 {
        self.shared
            .served
            .lock()
            .map(|m| m.get(file).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(stream: TcpStream, s: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(r) => r,
        Err(_) => return,
    });
    let mut out = stream;
    loop {
        let mut request = String::new();
        // Read one request head; idle connections are polled so the server can stop.
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    request.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                Err(_) if s.stop.load(Ordering::Relaxed) => return,
                Err(_) if request.is_empty() => continue,
                Err(_) => return,
            }
        }
        let mut lines = request.lines();
        let mut first = lines.next().unwrap_or("").split_whitespace();
        let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
        let range = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("range"))
            .map(|(_, v)| v.trim().to_string());
        let (head, body) = respond(s, method, path, range.as_deref());
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        let stall = match s.stall.lock() {
            Ok(mut g) => match g.as_ref() {
                Some((f, n)) if method == "GET" && path.ends_with(&format!("/{f}")) => {
                    let n = *n;
                    *g = None;
                    Some(n)
                }
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(n) = stall {
            let _ = out.write_all(&body[..n.min(body.len())]);
            let _ = out.flush();
            while !s.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        if method == "GET" && out.write_all(&body).is_err() {
            return;
        }
        let _ = out.flush();
    }
}

fn respond(s: &Shared, method: &str, path: &str, range: Option<&str>) -> (String, Vec<u8>) {
    let status = |code: &str, extra: &str| {
        (
            format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n{extra}\r\n"),
            Vec::new(),
        )
    };
    if method != "GET" && method != "HEAD" {
        return status("405 Method Not Allowed", "");
    }
    // /{org}/{name}/resolve/{rev}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() != 5 || parts[2] != "resolve" {
        return status("404 Not Found", "");
    }
    let repo_id = format!("{}/{}", parts[0], parts[1]);
    if repo_id == "test/private" {
        return status("401 Unauthorized", "X-Error-Code: GatedRepo\r\n");
    }
    let Some(repo) = s.repos.get(&repo_id) else {
        return status("404 Not Found", "X-Error-Code: RepoNotFound\r\n");
    };
    if parts[3] != "main" && parts[3] != COMMIT {
        return status("404 Not Found", "X-Error-Code: RevisionNotFound\r\n");
    }
    let file = parts[4];
    let Some(data) = repo.files.get(file) else {
        return status(
            "404 Not Found",
            &format!("X-Error-Code: EntryNotFound\r\nX-Repo-Commit: {COMMIT}\r\n"),
        );
    };
    let etag: String = repo.etag.clone().unwrap_or_else(|| {
        Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    });
    let commit = repo.commit.as_deref().unwrap_or(COMMIT);
    let common = format!("ETag: \"{etag}\"\r\nX-Repo-Commit: {commit}\r\nAccept-Ranges: bytes\r\n");
    let len = data.len() as u64;
    let (code, body, extra) = match range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
    {
        Some((a, b)) if method == "GET" => {
            let a: u64 = a.parse().unwrap_or(0);
            let b: u64 = b.parse().unwrap_or(len - 1).min(len - 1);
            (
                "206 Partial Content",
                data[a as usize..=b as usize].to_vec(),
                format!("Content-Range: bytes {a}-{b}/{len}\r\n"),
            )
        }
        _ => ("200 OK", data.clone(), String::new()),
    };
    if method == "GET" {
        if let Ok(mut m) = s.served.lock() {
            *m.entry(file.to_string()).or_insert(0) += body.len() as u64;
        }
    }
    let head = format!(
        "HTTP/1.1 {code}\r\nContent-Length: {}\r\n{common}{extra}\r\n",
        if method == "HEAD" {
            len
        } else {
            body.len() as u64
        }
    );
    (head, body)
}

fn fixture() -> PathBuf {
    common::fixture("sdar")
}

/// The fixture's checkpoint files (not its golden data), served as `test/sdar`.
fn sdar_repo() -> Repo {
    let mut files = HashMap::new();
    for entry in std::fs::read_dir(fixture()).expect("fixture folder") {
        let p = entry.expect("entry").path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if !name.starts_with("golden") && p.is_file() {
            files.insert(name, std::fs::read(&p).expect("read fixture"));
        }
    }
    Repo {
        files,
        etag: None,
        commit: None,
    }
}

fn opts(endpoint: &str, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: Some(endpoint.into()),
        cache_dir: Some(cache.into()),
        ..HubOptions::default()
    }
}

fn logits(folder: &Path) -> Vec<f32> {
    let m = DiffusionModel::load(folder, DType::F32, &Device::Cpu).expect("load");
    let ids: Vec<u32> = (0..12).map(|i| (i * 17 + 3) % 400).collect();
    m.forward_all(&ids, 4)
        .expect("forward")
        .flatten_all()
        .expect("flatten")
        .to_vec1()
        .expect("to_vec")
}

#[test]
fn hub_downloads() {
    let mut server = Server::start(HashMap::from([("test/sdar".to_string(), sdar_repo())]));
    let shard1 = "model-00001-of-00002.safetensors";
    let shard1_len = std::fs::metadata(fixture().join(shard1))
        .expect("shard")
        .len();

    // 1. A fresh download lands in the standard cache layout and loads to the same logits.
    let cache = tempfile::tempdir().expect("tempdir");
    let mut events: Vec<Progress> = Vec::new();
    let hub = Hub::new(opts(&server.endpoint, cache.path())).expect("hub");
    let folder = hub
        .download("test/sdar", &mut |p| events.push(p.clone()))
        .expect("fresh download");
    assert_eq!(
        folder,
        cache
            .path()
            .join("models--test--sdar/snapshots")
            .join(COMMIT)
    );
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        shard1,
    ] {
        assert!(
            folder.join(f).exists(),
            "{f} missing from {}",
            folder.display()
        );
    }
    assert!(
        !folder.join("golden.json").exists(),
        "only checkpoint files are fetched"
    );
    assert!(events
        .iter()
        .any(|p| p.file == shard1 && p.bytes_done == shard1_len && p.bytes_total == shard1_len));
    assert_eq!(logits(&folder), logits(&fixture()));

    // 2. Resume: a partial blob left in the cache is continued with a Range request.
    let cache2 = tempfile::tempdir().expect("tempdir");
    let data = std::fs::read(fixture().join(shard1)).expect("shard");
    let etag: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let blobs = cache2.path().join("models--test--sdar/blobs");
    std::fs::create_dir_all(&blobs).expect("blobs");
    let half = data.len() / 2;
    std::fs::write(blobs.join(format!("{etag}.incomplete")), &data[..half]).expect("partial");
    let before = server.served(shard1);
    let resumed = Hub::new(HubOptions {
        chunk_bytes: Some(40_000),
        ..opts(&server.endpoint, cache2.path())
    })
    .expect("hub")
    .download("test/sdar", &mut |_| {})
    .expect("resumed download");
    assert_eq!(
        server.served(shard1) - before,
        (data.len() - half) as u64,
        "only the missing half is fetched"
    );
    assert_eq!(std::fs::read(resumed.join(shard1)).expect("blob"), data);
    assert!(!blobs.join(format!("{etag}.incomplete")).exists());
    assert_eq!(logits(&resumed), logits(&fixture()));

    // 3. 404 and 401 name the repository and say what to do.
    let e = hub
        .download("test/missing", &mut |_| {})
        .expect_err("404")
        .to_string();
    assert!(e.contains("test/missing") && e.contains("not found"), "{e}");
    let e = hub
        .download("test/private", &mut |_| {})
        .expect_err("401")
        .to_string();
    assert!(
        e.contains("test/private") && e.contains("HF_TOKEN") && e.contains("401"),
        "{e}"
    );

    // 4. With the server gone, the cached model opens without network, also in offline mode.
    let endpoint = server.endpoint.clone();
    server.stop();
    let again = hub::resolve_model(
        "test/sdar",
        Need::Weights,
        &opts(&endpoint, cache.path()),
        &mut |_| {},
    )
    .expect("cached open");
    assert_eq!(again, folder);
    let offline = HubOptions {
        offline: true,
        ..opts(&endpoint, cache.path())
    };
    assert_eq!(
        Hub::new(offline.clone())
            .expect("hub")
            .download("test/sdar", &mut |_| {})
            .expect("offline"),
        folder
    );

    // 5. Offline with nothing cached, and no network at all: clear messages.
    let empty = tempfile::tempdir().expect("tempdir");
    let e = Hub::new(HubOptions {
        offline: true,
        ..opts(&endpoint, empty.path())
    })
    .expect("hub")
    .download("test/sdar", &mut |_| {})
    .expect_err("offline, not cached")
    .to_string();
    assert!(
        e.contains("HF_HUB_OFFLINE") && e.contains("test/sdar"),
        "{e}"
    );
    let e = hub::resolve_model(
        "test/sdar",
        Need::Weights,
        &opts(&endpoint, empty.path()),
        &mut |_| {},
    )
    .expect_err("no network")
    .to_string();
    assert!(e.contains("cannot reach") && e.contains("127.0.0.1"), "{e}");
}

/// Everything under `root` that is neither inside `keep` nor one of its parent folders.
fn outside(root: &Path, keep: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let p = entry.expect("entry").path();
            if !p.starts_with(keep) && !keep.starts_with(&p) {
                found.push(p.clone());
            }
            let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
            if is_dir && !p.starts_with(keep) {
                todo.push(p);
            }
        }
    }
    found
}

#[test]
fn hostile_headers_write_nothing_outside_the_cache() {
    let outer = tempfile::tempdir().expect("tempdir");
    let cache = outer.path().join("a/b/c/cache");
    let abs = outer.path().join("absolute-x").display().to_string();
    let evil = |etag: Option<&str>, commit: Option<&str>| Repo {
        etag: etag.map(str::to_string),
        commit: commit.map(str::to_string),
        ..sdar_repo()
    };
    let server = Server::start(HashMap::from([
        ("test/etag".to_string(), evil(Some("../../../../x"), None)),
        ("test/abs".to_string(), evil(Some(&abs), None)),
        ("test/commit".to_string(), evil(None, Some("../../../../x"))),
        ("test/sdar".to_string(), sdar_repo()),
    ]));
    let hub = Hub::new(opts(&server.endpoint, &cache)).expect("hub");
    for (id, header, value) in [
        ("test/etag", "ETag", "../../../../x"),
        ("test/abs", "ETag", abs.as_str()),
        ("test/commit", "X-Repo-Commit", "../../../../x"),
    ] {
        let e = hub.download(id, &mut |_| {}).expect_err(id).to_string();
        assert!(
            e.contains(header) && e.contains(value) && e.contains("nothing was written"),
            "{id}: {e}"
        );
    }
    for rev in ["../../x", "/abs", "a/../../b", "main\\..\\x", ""] {
        let e = Hub::new(HubOptions {
            revision: Some(rev.into()),
            ..opts(&server.endpoint, &cache)
        })
        .expect("hub")
        .download("test/sdar", &mut |_| {})
        .expect_err(rev)
        .to_string();
        assert!(e.contains(&format!("revision `{rev}`")), "{e}");
    }
    let escaped = outside(outer.path(), &cache);
    assert!(escaped.is_empty(), "written outside the cache: {escaped:?}");
    // The same server's honest repository still downloads, under the cache root only.
    let folder = hub.download("test/sdar", &mut |_| {}).expect("honest repo");
    assert!(folder.starts_with(&cache));
    assert!(outside(outer.path(), &cache).is_empty());
}

#[test]
fn timeouts_name_the_host_and_a_stalled_download_resumes() {
    let quick = |endpoint: &str, cache: &Path| HubOptions {
        connect_timeout: Some(Duration::from_millis(800)),
        idle_timeout: Some(Duration::from_millis(800)),
        chunk_bytes: Some(40_000),
        ..opts(endpoint, cache)
    };

    // 1. A tarpit: accepts connections, never answers.
    let tarpit = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = tarpit.local_addr().expect("addr").to_string();
    tarpit.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((s, _)) = tarpit.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let cache = tempfile::tempdir().expect("tempdir");
    let t0 = std::time::Instant::now();
    let e = Hub::new(quick(&format!("http://{addr}"), cache.path()))
        .expect("hub")
        .download("test/sdar", &mut |_| {})
        .expect_err("tarpit")
        .to_string();
    stop.store(true, Ordering::Relaxed);
    let _ = holder.join();
    assert!(
        e.contains(&addr) && e.contains("timed out") && e.contains("HF_HUB_DOWNLOAD_TIMEOUT"),
        "{e}"
    );
    // Generous: the point is that it returns at all (it used to wait forever).
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());

    // 2. A body that stops after 10 bytes: a clear error, the 10 bytes kept, then a rerun
    //    fetches only the rest.
    let server = Server::start(HashMap::from([("test/sdar".to_string(), sdar_repo())]));
    let shard1 = "model-00001-of-00002.safetensors";
    let data = std::fs::read(fixture().join(shard1)).expect("shard");
    let etag: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    *server.shared.stall.lock().expect("lock") = Some((shard1.to_string(), 10));
    let cache = tempfile::tempdir().expect("tempdir");
    let e = Hub::new(quick(&server.endpoint, cache.path()))
        .expect("hub")
        .download("test/sdar", &mut |_| {})
        .expect_err("stalled body")
        .to_string();
    let host = server.endpoint.trim_start_matches("http://");
    assert!(
        e.contains(host) && e.contains("timed out") && e.contains(shard1),
        "{e}"
    );
    let part = cache
        .path()
        .join("models--test--sdar/blobs")
        .join(format!("{etag}.incomplete"));
    assert_eq!(std::fs::metadata(&part).expect("partial blob").len(), 10);
    let before = server.served(shard1);
    let folder = Hub::new(quick(&server.endpoint, cache.path()))
        .expect("hub")
        .download("test/sdar", &mut |_| {})
        .expect("resumed after the timeout");
    assert_eq!(server.served(shard1) - before, (data.len() - 10) as u64);
    assert_eq!(std::fs::read(folder.join(shard1)).expect("shard"), data);
}

/// Runs the built binary against the test server, with its own cache; every other hub variable
/// is cleared so the user's token or cache never takes part.
fn unmask_with_hub(endpoint: &str, cache: &Path, args: &[&str]) -> (bool, String, String) {
    common::output(
        common::unmask()
            .args(args)
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HUB_CACHE", cache)
            .env_remove("HF_HOME")
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_OFFLINE"),
    )
}

#[test]
fn every_command_takes_hub_ids_and_presets() {
    // The preset `sdar-1.7b-chat` names JetLM/SDAR-1.7B-Chat: served here with the fixture.
    let server = Server::start(HashMap::from([
        ("test/sdar".to_string(), sdar_repo()),
        ("JetLM/SDAR-1.7B-Chat".to_string(), sdar_repo()),
    ]));
    let shard1 = "model-00001-of-00002.safetensors";
    let cache = tempfile::tempdir().expect("tempdir");
    let snapshot = cache
        .path()
        .join("models--test--sdar/snapshots")
        .join(COMMIT);

    // `inspect` fetches the metadata only: config, tokenizer, side files, the shard index.
    let (ok, out, err) = unmask_with_hub(
        &server.endpoint,
        cache.path(),
        &["inspect", "--model", "test/sdar"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("SDAR") && out.contains("mask id:"), "{out}");
    assert!(snapshot.join("config.json").exists() && snapshot.join("tokenizer.json").exists());
    assert!(snapshot.join("model.safetensors.index.json").exists());
    assert_eq!(server.served(shard1), 0, "inspect downloaded weights");
    assert!(!snapshot.join(shard1).exists());

    // `forward` then fetches the weights; stderr is not a terminal, so progress is plain lines.
    let dir = tempfile::tempdir().expect("tempdir");
    let logits = dir.path().join("logits.safetensors");
    let (ok, _, err) = unmask_with_hub(
        &server.endpoint,
        cache.path(),
        &[
            "forward",
            "--model",
            "test/sdar",
            "--ids",
            "5,6,7",
            "--out",
            logits.to_str().expect("utf-8 path"),
        ],
    );
    assert!(ok, "{err}");
    assert!(err.contains(&format!("downloaded {shard1}: ")), "{err}");
    assert!(!err.contains('\r'), "no terminal redraws in a log: {err:?}");
    let t = candle_core::safetensors::load(&logits, &Device::Cpu).expect("logits");
    assert_eq!(t["logits"].dims(), &[3, 420]);
    let served = server.served(shard1);
    assert!(served > 0);

    // A second run opens the cache without fetching again.
    let (ok, _, err) = unmask_with_hub(
        &server.endpoint,
        cache.path(),
        &["inspect", "--model", "test/sdar"],
    );
    assert!(ok && !err.contains("downloaded"), "{err}");
    assert_eq!(server.served(shard1), served);

    // `eval` and `generate` take a preset key like any other command.
    let (ok, _, err) = unmask_with_hub(
        &server.endpoint,
        cache.path(),
        &[
            "eval",
            "--model",
            "sdar-1.7b-chat",
            "--skip",
            "masked,validity,repair",
        ],
    );
    assert!(ok, "{err}");
    assert!(cache
        .path()
        .join("models--JetLM--SDAR-1.7B-Chat/snapshots")
        .join(COMMIT)
        .join(shard1)
        .exists());
    let (ok, out, err) = unmask_with_hub(
        &server.endpoint,
        cache.path(),
        &[
            "generate",
            "--model",
            "sdar-1.7b-chat",
            "--prompt-ids",
            "5,6,7,8",
            "--gen-length",
            "4",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["ids"].as_array().map(Vec::len), Some(4), "{out}");

    // Something that is none of the four kinds is named, with what would have been accepted.
    let (ok, _, err) = unmask_with_hub(
        &server.endpoint,
        cache.path(),
        &[
            "forward",
            "--model",
            "no-such-model",
            "--ids",
            "1",
            "--out",
            "x",
        ],
    );
    assert!(
        !ok && err.contains("`no-such-model` is not a model folder"),
        "{err}"
    );
}
