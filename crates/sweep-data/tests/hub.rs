//! Loading through hf-hub from a local server that speaks the hub's protocol, then offline from
//! the cache it filled; and the errors when neither the hub nor the cache has the files.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{config, documents, options, write_parquet};
use sweep_data::{prepare_with, HubSettings, Language, PrepareOptions, SourceKind, TextTokenizer};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A minimal Hugging Face Hub: repository info, and file downloads with the headers hf-hub needs
/// (X-Repo-Commit, ETag, ranges answered with 206 and Content-Range).
struct HubServer {
    url: String,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HubServer {
    fn start(routes: HashMap<String, Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(stream, &routes, &requests2);
                }
            }
        });
        Self { url, stop, requests, thread: Some(thread) }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn shut_down(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        self.thread.take().unwrap().join().unwrap();
    }
}

fn serve(mut stream: TcpStream, routes: &HashMap<String, Vec<u8>>, requests: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap().to_string();
    // `Range: bytes=START-` or `bytes=START-END` (hf-hub probes a file with `bytes=0-0`).
    let mut range: Option<(usize, Option<usize>)> = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(spec) = lower.strip_prefix("range: bytes=") {
            let (start, end) = spec.trim().split_once('-').unwrap_or(("0", ""));
            range = start.parse().ok().map(|s| (s, end.parse().ok()));
        }
    }
    requests.lock().unwrap().push(path.clone());
    let (status, extra, body): (&str, String, Vec<u8>) = match routes.get(&path) {
        None => ("404 Not Found", String::new(), b"{\"error\":\"Repository not found\"}".to_vec()),
        Some(content) if path.starts_with("/api/") => {
            ("200 OK", "Content-Type: application/json\r\n".into(), content.clone())
        }
        Some(content) => {
            let etag = format!("\"{:016x}\"", sweep_data::rng::hash_bytes(7, content));
            let common = format!("ETag: {etag}\r\nX-Repo-Commit: {COMMIT}\r\n");
            match range {
                Some((start, end)) if start < content.len() => {
                    let end = end.unwrap_or(content.len() - 1).min(content.len() - 1);
                    (
                        "206 Partial Content",
                        format!("{common}Content-Range: bytes {start}-{end}/{}\r\n", content.len()),
                        content[start..=end].to_vec(),
                    )
                }
                _ => ("200 OK", common, content.clone()),
            }
        }
    };
    let head = format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
    let _ = stream.flush();
}

fn repository() -> (HashMap<String, Vec<u8>>, Vec<String>) {
    let docs = documents(60, 9);
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("train.parquet");
    let rows: Vec<&[u8]> = docs.iter().map(|d| d.as_bytes()).collect();
    write_parquet(&parquet, "text", &rows);
    let code = Language::Code.automaton().sample_documents(9, 100_000);
    let jsonl: String = code.iter().map(|d| serde_json::json!({ "text": d }).to_string() + "\n").collect();
    let tokenizer_docs: Vec<String> = docs.iter().chain(&code).cloned().collect();
    let tokenizer = TextTokenizer::train_bpe(tokenizer_docs.iter(), 600, false).unwrap();
    let info = serde_json::json!({
        "sha": COMMIT,
        "siblings": [
            { "rfilename": "README.md" },
            { "rfilename": "data/train-00000-of-00001.parquet" },
            { "rfilename": "code/part-0.jsonl" },
        ],
    });
    let mut routes = HashMap::new();
    routes.insert("/api/datasets/org/corpus/revision/main".to_string(), info.to_string().into_bytes());
    routes.insert(
        "/datasets/org/corpus/resolve/main/data/train-00000-of-00001.parquet".to_string(),
        std::fs::read(&parquet).unwrap(),
    );
    routes.insert("/datasets/org/corpus/resolve/main/code/part-0.jsonl".to_string(), jsonl.into_bytes());
    routes.insert("/datasets/org/corpus/resolve/main/README.md".to_string(), b"# corpus\n".to_vec());
    routes
        .insert("/org/tok/resolve/main/tokenizer.json".to_string(), tokenizer.to_json().unwrap().unwrap().into_bytes());
    (routes, docs)
}

const CONFIG: &str = r#"
    general = { type = "hub", repo = "org/corpus", files = ["data/*.parquet"] }
    domain = { type = "hub", repo = "org/corpus", files = ["code/*.jsonl"], column = "text" }
    tokenizer = { hub = "org/tok" }
    validation_fraction = 0.2
"#;

fn hub_options(vocab: usize, data_cache: &Path, hf_cache: &Path, endpoint: &str, offline: bool) -> PrepareOptions {
    let mut o = options(vocab, data_cache, data_cache);
    o.hub = HubSettings {
        endpoint: endpoint.to_string(),
        cache_dir: hf_cache.to_path_buf(),
        offline,
        show_progress: false,
    };
    o
}

#[test]
fn datasets_and_tokenizers_load_from_the_hub_then_offline_from_its_cache() {
    let (routes, docs) = repository();
    let server = HubServer::start(routes);
    let work = tempfile::tempdir().unwrap();
    let hf_cache = work.path().join("hf");
    let cfg = config(CONFIG);

    let online =
        prepare_with(&cfg, &hub_options(1024, &work.path().join("d1"), &hf_cache, &server.url, false)).unwrap();
    let general = &online.source(SourceKind::General).unwrap().stats;
    assert_eq!(general.train.documents + general.validation.documents, docs.len() as u64);
    assert_eq!(general.train.bytes + general.validation.bytes, docs.iter().map(|d| d.len() as u64).sum::<u64>());
    assert!(online.source(SourceKind::Domain).unwrap().stats.train.documents > 0);
    assert!(online.tokenizer().id_count() <= 600);
    let requests = server.requests();
    assert!(requests.contains(&"/api/datasets/org/corpus/revision/main".to_string()), "{requests:?}");
    assert!(!requests.iter().any(|r| r.contains("README")), "only matching files are downloaded: {requests:?}");
    // The standard cache layout, which the Python libraries share.
    let repo = hf_cache.join("datasets--org--corpus");
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap().trim(), COMMIT);
    assert!(repo.join("snapshots").join(COMMIT).join("data/train-00000-of-00001.parquet").exists());
    assert!(hf_cache.join("models--org--tok/snapshots").join(COMMIT).join("tokenizer.json").exists());
    server.shut_down();

    // The hub is gone: the same data comes from the cache, with or without HF_HUB_OFFLINE.
    for (offline, dir) in [(false, "d2"), (true, "d3")] {
        let again =
            prepare_with(&cfg, &hub_options(1024, &work.path().join(dir), &hf_cache, "http://127.0.0.1:9", offline))
                .unwrap();
        assert_eq!(again.tokenizer().identity(), online.tokenizer().identity());
        for kind in [SourceKind::General, SourceKind::Domain] {
            assert_eq!(again.source(kind).unwrap().stats, online.source(kind).unwrap().stats, "offline {offline}");
        }
    }
}

#[test]
fn an_unreachable_hub_with_no_cache_is_a_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let cfg = config(CONFIG);
    let hf_cache = work.path().join("empty-hf");
    let err = prepare_with(&cfg, &hub_options(1024, &work.path().join("d"), &hf_cache, "http://127.0.0.1:9", false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("org/corpus") && err.contains("cannot reach http://127.0.0.1:9"), "{err}");
    assert!(err.contains(&hf_cache.display().to_string()) && err.contains("no copy"), "{err}");
    let err = prepare_with(&cfg, &hub_options(1024, &work.path().join("d"), &hf_cache, "http://127.0.0.1:9", true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("HF_HUB_OFFLINE is set") && err.contains("no copy"), "{err}");
}

#[test]
fn hub_answers_are_reported_not_hidden_by_the_cache() {
    let (routes, _) = repository();
    let server = HubServer::start(routes);
    let work = tempfile::tempdir().unwrap();
    let hf = work.path().join("hf");
    let missing = config(
        r#"general = { type = "hub", repo = "org/absent" }
        tokenizer = "byte""#,
    );
    let err = prepare_with(&missing, &hub_options(256, &work.path().join("d"), &hf, &server.url, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("org/absent") && err.contains("404"), "{err}");
    let no_match = config(
        r#"general = { type = "hub", repo = "org/corpus", files = ["*.csv"] }
        tokenizer = "byte""#,
    );
    let err = prepare_with(&no_match, &hub_options(256, &work.path().join("d"), &hf, &server.url, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no file matches") && err.contains("data/train-00000-of-00001.parquet"), "{err}");
    server.shut_down();
}
