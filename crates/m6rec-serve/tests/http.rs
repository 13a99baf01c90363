//! The service over real sockets on 127.0.0.1: every endpoint, persistence across a restart, hot reload, and each
//! kind of bad input answered with a JSON error while the server keeps serving.
//!
//! The fixture: the embedded demo dataset, MiniLM text features, and a small content-only model trained for a few
//! epochs (built once per test binary).

use m6rec_fusion::{FusionConfig, ItemTowerConfig, TowerMode};
use m6rec_serve::api::*;
use m6rec_serve::{Limits, ModelSource, ServeConfig, Service};
use m6rec_train::checkpoint::DatasetFingerprint;
use m6rec_train::generative::{text_content, Generative, GenerativeConfig};
use m6rec_train::{RunConfig, Silent, Trainer};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    ckpt: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let _rng = m6rec_testkit::torch_rng();
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("demo");
        let ds = m6rec_data::import::import(m6rec_data::import::Format::RecBole, &m6rec_testkit::fixture("demo"))
            .expect("import the demo fixture")
            .dataset;
        ds.save(&data).expect("save dataset");
        let fcfg = m6rec_features::FeatureConfig {
            text: Some(m6rec_features::TextFeatureConfig {
                model: m6rec_testkit::text_model(),
                max_len: 64,
                batch_size: 64,
            }),
            ..Default::default()
        };
        m6rec_features::build(&data, &ds, &m6rec_features::default_cache_dir(&data), &fcfg, &())
            .expect("feature cache");
        let mut cfg = RunConfig::default();
        cfg.model.d_model = 32;
        cfg.model.n_layers = 1;
        cfg.model.max_len = 20;
        cfg.train.epochs = 4;
        cfg.train.batch_size = 128;
        cfg.train.warmup_steps = 5;
        cfg.item_tower =
            Some(ItemTowerConfig { mode: TowerMode::ContentOnly, fusion: FusionConfig::Mean, id_dropout: 0.0 });
        cfg.content = Some(m6rec_train::content::ContentConfig::default());
        let content = m6rec_train::open::item_content(&data, None, &ds, &cfg.recommender()).expect("content");
        let mut t = Trainer::with_content(cfg.clone(), DatasetFingerprint::of(&ds), Some(&content), tch::Device::Cpu)
            .expect("trainer");
        let split = cfg.split(&ds.interactions, ds.n_users(), ds.n_items());
        let ckpt = dir.path().join("ckpt");
        t.fit(&split, Some(&ckpt), &mut Silent).expect("train");
        Fixture { _dir: dir, data, ckpt }
    })
}

/// A generative checkpoint (semantic IDs from the fixture's MiniLM text embeddings) on the fixture's data.
fn generative_fixture() -> &'static (tempfile::TempDir, PathBuf) {
    static G: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    G.get_or_init(|| {
        let f = fixture(); // before the generator's lock: the fixture takes it too
        let _rng = m6rec_testkit::torch_rng();
        let ds = m6rec_data::Dataset::load(&f.data).expect("dataset");
        let mut cfg = RunConfig::default();
        cfg.model.d_model = 32;
        cfg.model.n_layers = 1;
        cfg.model.max_len = 20;
        cfg.optim.lr = 3e-3;
        cfg.train.epochs = 3;
        cfg.train.batch_size = 128;
        cfg.train.warmup_steps = 5;
        cfg.generative = Some(GenerativeConfig {
            // RQ-VAE codes: a posted item's code goes through the encoder saved with them.
            semantic_ids: m6rec_semantic::SemanticIdConfig {
                levels: 2,
                codes: 16,
                method: m6rec_semantic::Method::Rqvae,
                rqvae: m6rec_semantic::RqVaeConfig { steps: 300, batch: 128, ..Default::default() },
                ..Default::default()
            },
            beam: 20,
            ..GenerativeConfig::default()
        });
        let content = text_content(&f.data, None, &ds).expect("text content");
        let mut g = Generative::init(cfg.clone(), &content, tch::Device::Cpu).expect("generative model");
        let split = cfg.split(&ds.interactions, ds.n_users(), ds.n_items());
        let dir = tempfile::tempdir().expect("temp dir");
        let ckpt = dir.path().join("gen");
        g.fit(&split, Some(&ckpt), &mut |_| {}).expect("train");
        (dir, ckpt)
    })
}

/// A running server and the runtime it runs on.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<std::sync::mpsc::Receiver<()>>,
    _rt: tokio::runtime::Runtime,
    svc: Arc<Service>,
}

impl Server {
    fn start(state: &Path, limits: Limits) -> Server {
        Server::start_with(state, limits, m6rec_serve::index::IndexKind::Exact)
    }

    fn start_with(state: &Path, limits: Limits, index: m6rec_serve::index::IndexKind) -> Server {
        Server::start_full(state, limits, index, Some(ADMIN_TOKEN), None)
    }

    fn start_full(
        state: &Path,
        limits: Limits,
        index: m6rec_serve::index::IndexKind,
        admin_token: Option<&str>,
        media_root: Option<&Path>,
    ) -> Server {
        Server::start_checkpoint(&fixture().ckpt, state, limits, index, admin_token, media_root)
    }

    fn start_checkpoint(
        checkpoint: &Path,
        state: &Path,
        limits: Limits,
        index: m6rec_serve::index::IndexKind,
        admin_token: Option<&str>,
        media_root: Option<&Path>,
    ) -> Server {
        let f = fixture();
        let source = ModelSource {
            checkpoint: checkpoint.to_path_buf(),
            data: f.data.clone(),
            features: None,
            text_model: Some(m6rec_testkit::text_model()),
            device: tch::Device::Cpu,
            index,
        };
        let cfg = ServeConfig {
            source,
            state_dir: state.to_path_buf(),
            media_root: media_root.map(Path::to_path_buf),
            limits,
            admin_token: admin_token.map(String::from),
        };
        let svc = Service::open(cfg).expect("service opens");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel();
        let s = svc.clone();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            let _ = s
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await;
            let _ = done_tx.send(());
        });
        Server { addr, stop: Some(stop), done: Some(done), _rt: rt, svc }
    }

    /// Graceful shutdown; returns once the server future finished.
    fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            d.recv_timeout(Duration::from_secs(20)).expect("server stops within 20 s");
        }
    }

    fn raw(&self, request: &[u8]) -> (u16, String) {
        raw_at(self.addr, request)
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.call_as(method, path, body, "")
    }

    /// `call` with extra header lines (each ending in `\r\n`).
    fn call_as(&self, method: &str, path: &str, body: Option<&str>, headers: &str) -> (u16, Value) {
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, text) = self.raw(req.as_bytes());
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn post<T: serde::Serialize>(&self, path: &str, body: &T) -> (u16, Value) {
        self.call("POST", path, Some(&serde_json::to_string(body).expect("json")))
    }

    /// A reload as the admin (with the token).
    fn reload(&self, checkpoint: Option<&Path>) -> (u16, Value) {
        let body = checkpoint.map(|c| serde_json::json!({ "checkpoint": c }).to_string());
        self.call_as("POST", "/v1/admin/reload", body.as_deref(), &format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"))
    }
}

/// One request on its own connection to `addr`: the status and the body.
fn raw_at(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    s.write_all(request).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

fn item_ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .map_or(Vec::new(), |a| a.iter().filter_map(|x| x["item_id"].as_str().map(String::from)).collect())
}

fn limits() -> Limits {
    Limits { max_body: 256 << 10, request_timeout: Duration::from_secs(2), ..Limits::default() }
}

fn demo() -> m6rec_data::Dataset {
    m6rec_data::Dataset::load(&fixture().data).expect("dataset")
}

#[test]
fn recommends_for_known_and_new_users_with_filters() {
    let state = tempfile::tempdir().expect("tmp");
    let srv = Server::start(state.path(), limits());
    let ds = demo();
    let user = ds.users[0].clone();
    let split = m6rec_data::Split::leave_one_out(&ds.interactions, ds.n_users());
    let seen: Vec<String> = split.sequence(0).iter().map(|&i| ds.items[i as usize].id.clone()).collect();

    let (st, v) = srv.post(
        "/v1/recommend",
        &RecommendRequest { user_id: Some(user.clone()), k: 20, exclude_seen: true, ..Default::default() },
    );
    assert_eq!(st, 200, "{v}");
    let ids = item_ids(&v);
    assert_eq!(ids.len(), 20);
    assert!(ids.iter().all(|i| !seen.contains(i)), "a seen item came back: {ids:?}");
    let scores: Vec<f64> = v["items"].as_array().expect("items").iter().filter_map(|x| x["score"].as_f64()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "scores not descending: {scores:?}");
    assert_eq!(v["history_len"].as_u64(), Some(seen.len() as u64));

    // A new user by history, one domain, with a blocklist.
    let history: Vec<String> = seen.iter().take(5).cloned().collect();
    let domain = ds.items[0].domain.clone();
    let (st, v) = srv.post(
        "/v1/recommend",
        &RecommendRequest {
            history: Some(history.clone()),
            k: 10,
            exclude_seen: true,
            domain: Some(domain.clone()),
            ..Default::default()
        },
    );
    assert_eq!(st, 200, "{v}");
    let first = item_ids(&v);
    assert!(v["items"].as_array().expect("items").iter().all(|x| x["domain"] == domain.as_str()), "{v}");
    let (st, v) = srv.post(
        "/v1/recommend",
        &RecommendRequest {
            history: Some(history.clone()),
            k: 10,
            exclude_seen: true,
            domain: Some(domain.clone()),
            blocklist: vec![first[0].clone()],
            ..Default::default()
        },
    );
    assert_eq!(st, 200);
    assert!(!item_ids(&v).contains(&first[0]), "the blocked item came back");

    // exclude_seen off lets history items back in: over the whole catalog they must appear.
    let (st, v) = srv.post(
        "/v1/recommend",
        &RecommendRequest {
            history: Some(history.clone()),
            k: ds.n_items(),
            exclude_seen: false,
            ..Default::default()
        },
    );
    assert_eq!(st, 200);
    assert!(history.iter().all(|h| item_ids(&v).contains(h)));

    // An empty history falls back to popularity: the most interacted item first.
    let (st, v) =
        srv.post("/v1/recommend", &RecommendRequest { history: Some(Vec::new()), k: 1, ..Default::default() });
    assert_eq!(st, 200, "{v}");
    let mut counts = vec![0usize; ds.n_items()];
    for &i in &ds.interactions.item {
        counts[i as usize] += 1;
    }
    let top = (0..ds.n_items()).max_by_key(|&i| (counts[i], std::cmp::Reverse(i))).unwrap_or(0);
    assert_eq!(counts[ds.item_index()[item_ids(&v)[0].as_str()] as usize], counts[top]);
    srv.shutdown();
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let state = tempfile::tempdir().expect("tmp");
    let srv = Server::start(state.path(), limits());
    let ds = demo();
    let good = RecommendRequest {
        history: Some(vec![ds.items[0].id.clone()]),
        k: 5,
        exclude_seen: true,
        ..Default::default()
    };
    let cases: Vec<(&str, (u16, Value), u16, &str)> = vec![
        ("malformed json", srv.call("POST", "/v1/recommend", Some("{\"k\": 3")), 400, "bad_json"),
        ("wrong field type", srv.call("POST", "/v1/recommend", Some("{\"k\": \"ten\"}")), 422, "bad_fields"),
        ("unknown field", srv.call("POST", "/v1/recommend", Some("{\"usr\": \"1\"}")), 422, "bad_fields"),
        (
            "unknown item",
            srv.post(
                "/v1/recommend",
                &RecommendRequest { history: Some(vec!["no-such-item".into()]), k: 5, ..Default::default() },
            ),
            422,
            "unknown_item",
        ),
        (
            "unknown user",
            srv.post(
                "/v1/recommend",
                &RecommendRequest { user_id: Some("no-such-user".into()), k: 5, ..Default::default() },
            ),
            404,
            "unknown_user",
        ),
        ("k of 0", srv.post("/v1/recommend", &RecommendRequest { k: 0, ..good.clone() }), 422, "bad_k"),
        ("k of a million", srv.post("/v1/recommend", &RecommendRequest { k: 1_000_000, ..good.clone() }), 422, "bad_k"),
        (
            "both user and history",
            srv.post("/v1/recommend", &RecommendRequest { user_id: Some(ds.users[0].clone()), ..good.clone() }),
            422,
            "bad_request",
        ),
        (
            "unknown domain",
            srv.post("/v1/recommend", &RecommendRequest { domain: Some("nowhere".into()), ..good.clone() }),
            422,
            "unknown_domain",
        ),
        (
            "history of 100,000 items",
            srv.post(
                "/v1/recommend",
                &RecommendRequest { history: Some(vec![ds.items[0].id.clone(); 20_000]), ..good.clone() },
            ),
            422,
            "history_too_long",
        ),
        (
            "huge body",
            srv.call(
                "POST",
                "/v1/recommend",
                Some(&format!("{{\"history\": [{}]}}", vec!["\"i0\""; 100_000].join(","))),
            ),
            413,
            "body_too_large",
        ),
        (
            "undecodable image",
            srv.post(
                "/v1/items",
                &ItemsRequest {
                    items: vec![ItemIn {
                        id: "x".into(),
                        title: "t".into(),
                        image_base64: Some("aGVsbG8=".into()),
                        ..Default::default()
                    }],
                },
            ),
            422,
            "bad_media",
        ),
        (
            "invalid base64",
            srv.post(
                "/v1/items",
                &ItemsRequest {
                    items: vec![ItemIn { id: "x".into(), audio_base64: Some("%%%".into()), ..Default::default() }],
                },
            ),
            422,
            "bad_media",
        ),
        (
            "media path without a media root",
            srv.post(
                "/v1/items",
                &ItemsRequest {
                    items: vec![ItemIn {
                        id: "x".into(),
                        image_path: Some("../etc/passwd".into()),
                        ..Default::default()
                    }],
                },
            ),
            422,
            "media_path_disabled",
        ),
        ("no items", srv.post("/v1/items", &ItemsRequest { items: vec![] }), 422, "bad_items"),
        (
            "events for unknown items",
            srv.post("/v1/events", &EventsRequest { user_id: "u".into(), items: vec!["nope".into()] }),
            422,
            "unknown_item",
        ),
        (
            "a 100 kB user id (issue 19.17)",
            srv.post(
                "/v1/events",
                &EventsRequest { user_id: "u".repeat(100_000), items: vec![ds.items[0].id.clone()] },
            ),
            422,
            "bad_id",
        ),
        (
            "a user id with NUL",
            srv.post("/v1/events", &EventsRequest { user_id: "u\0v".into(), items: vec![ds.items[0].id.clone()] }),
            422,
            "bad_id",
        ),
        (
            "an item id of 300 bytes",
            srv.post(
                "/v1/items",
                &ItemsRequest { items: vec![ItemIn { id: "i".repeat(300), title: "t".into(), ..Default::default() }] },
            ),
            422,
            "bad_id",
        ),
        ("no route", srv.call("GET", "/v2/nothing", None), 404, "no_route"),
        ("wrong method", srv.call("GET", "/v1/recommend", None), 405, "method_not_allowed"),
    ];
    for (what, (status, body), want_status, want_code) in &cases {
        assert_eq!(status, want_status, "{what}: {body}");
        assert_eq!(error_code(body), *want_code, "{what}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.len() > 10), "{what}: no message: {body}");
    }
    // Not JSON at all.
    let (st, body) =
        srv.raw(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(st, 415, "{body}");

    // A slow client (headers, then half its body) times out with 408 while others are served.
    let mut slow = TcpStream::connect(srv.addr).expect("connect");
    slow.write_all(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"k\":").expect("write");
    let (st, v) = srv.post("/v1/recommend", &good);
    assert_eq!(st, 200, "served while a slow client waits: {v}");
    slow.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "slow client got: {text}");

    // After all of that, the server still answers.
    let (st, v) = srv.post("/v1/recommend", &good);
    assert_eq!(st, 200, "{v}");
    assert_eq!(item_ids(&v).len(), 5);
    srv.shutdown();
}

#[test]
fn new_items_and_events_apply_at_once_and_survive_a_restart() {
    let state = tempfile::tempdir().expect("tmp");
    let ds = demo();
    let srv = Server::start(state.path(), limits());
    let n = ds.n_items();
    let new_item = ItemIn {
        id: "fresh-1".into(),
        title: format!("{} (new edition)", ds.items[3].title),
        domain: Some(ds.items[3].domain.clone()),
        text: ds.items[3].text.clone(),
        ..Default::default()
    };
    let (st, v) = srv.post("/v1/items", &ItemsRequest { items: vec![new_item.clone()] });
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["added"].as_u64(), Some(1));
    assert_eq!(v["catalog_size"].as_u64(), Some(n as u64 + 1));
    // Recommendable at once: it is ranked among the whole catalog, and usable in a history.
    let all = RecommendRequest {
        history: Some(vec![ds.items[2].id.clone()]),
        k: n + 1,
        exclude_seen: false,
        ..Default::default()
    };
    let (st, v) = srv.post("/v1/recommend", &all);
    assert_eq!(st, 200, "{v}");
    assert!(item_ids(&v).contains(&"fresh-1".to_string()));
    let (st, _) = srv
        .post("/v1/recommend", &RecommendRequest { history: Some(vec!["fresh-1".into()]), k: 3, ..Default::default() });
    assert_eq!(st, 200);
    // An item with the same text as item 3 lands near it: its score for a user follows item 3's closely.
    let scores: std::collections::HashMap<String, f64> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|x| Some((x["item_id"].as_str()?.to_string(), x["score"].as_f64()?)))
        .collect();
    let (a, b) = (scores["fresh-1"], scores[&ds.items[3].id]);
    let spread = scores.values().fold(f64::MIN, |m, &s| m.max(s)) - scores.values().fold(f64::MAX, |m, &s| m.min(s));
    assert!((a - b).abs() < 0.25 * spread, "new item {a} vs its twin {b} (catalog spread {spread})");

    // Events change what a known user gets, and create new users.
    let user = ds.users[1].clone();
    let ask = RecommendRequest { user_id: Some(user.clone()), k: 10, exclude_seen: true, ..Default::default() };
    let (_, before) = srv.post("/v1/recommend", &ask);
    let before_len = before["history_len"].as_u64().unwrap_or(0);
    let new_events: Vec<String> = ds.items.iter().rev().take(3).map(|it| it.id.clone()).collect();
    let (st, v) = srv.post("/v1/events", &EventsRequest { user_id: user.clone(), items: new_events.clone() });
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["history_len"].as_u64(), Some(before_len + 3));
    let (_, after) = srv.post("/v1/recommend", &ask);
    assert_eq!(after["history_len"].as_u64(), Some(before_len + 3));
    assert_ne!(before["items"], after["items"], "the recommendation ignored the new events");
    assert!(item_ids(&after).iter().all(|i| !new_events.contains(i)), "just-seen items recommended");
    let (st, _) = srv.post(
        "/v1/events",
        &EventsRequest { user_id: "brand-new".into(), items: vec!["fresh-1".into(), ds.items[0].id.clone()] },
    );
    assert_eq!(st, 200);
    let (_, v) = srv.call("GET", "/metrics", None);
    let metrics = v.as_str().unwrap_or_default().to_string();
    assert!(metrics.contains(&format!("m6rec_catalog_items {}", n + 1)), "{metrics}");
    assert!(metrics.contains("m6rec_requests_total{route=\"/v1/recommend\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("m6rec_request_duration_seconds_bucket{route=\"/v1/events\""), "{metrics}");
    srv.shutdown();

    // Restart on the same state: everything acknowledged is back.
    let srv = Server::start(state.path(), limits());
    let (st, v) =
        srv.post("/v1/recommend", &RecommendRequest { user_id: Some("brand-new".into()), k: 3, ..Default::default() });
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["history_len"].as_u64(), Some(2));
    let (_, v) = srv.post("/v1/recommend", &ask);
    assert_eq!(v["history_len"].as_u64(), Some(before_len + 3));
    assert_eq!(v["items"], after["items"], "same model, same history, same answer after a restart");
    let (_, h) = srv.call("GET", "/healthz", None);
    assert_eq!(h["catalog_items"].as_u64(), Some(n as u64 + 1), "{h}");
    srv.shutdown();
}

#[test]
fn hot_reload_swaps_models_and_a_bad_checkpoint_keeps_the_old_one() {
    let state = tempfile::tempdir().expect("tmp");
    let ds = demo();
    let srv = Server::start(state.path(), limits());
    let (st, _) = srv.post(
        "/v1/items",
        &ItemsRequest {
            items: vec![ItemIn { id: "added-before-reload".into(), title: "A new thing".into(), ..Default::default() }],
        },
    );
    assert_eq!(st, 200);
    let ask = RecommendRequest {
        history: Some(vec![ds.items[0].id.clone(), "added-before-reload".into()]),
        k: 5,
        ..Default::default()
    };
    let (_, before) = srv.post("/v1/recommend", &ask);
    assert_eq!(before["model_generation"].as_u64(), Some(1));
    // Issue 19.6: the admin route needs the token.
    let (st, v) = srv.call("POST", "/v1/admin/reload", None);
    assert_eq!((st, error_code(&v)), (401, "unauthorized"), "{v}");
    let (st, v) = srv.call_as("POST", "/v1/admin/reload", None, "Authorization: Bearer wrong-token-0123456789\r\n");
    assert_eq!((st, error_code(&v)), (401, "unauthorized"), "{v}");
    let (st, v) = srv.reload(Some(Path::new("/no/such/checkpoint")));
    assert_eq!(st, 422, "{v}");
    assert_eq!(error_code(&v), "bad_checkpoint");
    // Bad checkpoints (weights of another shape; NaN weights with a matching checksum; a flipped bit) are refused
    // with a message that holds no native frames and no paths, and the old model keeps serving.
    let f = fixture();
    let copy = |name: &str| {
        let to = state.path().join(name);
        std::fs::create_dir(&to).expect("mkdir");
        for e in std::fs::read_dir(&f.ckpt).expect("ckpt") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
        to
    };
    let shape = copy("shape");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(shape.join("config.json")).expect("config")).expect("json");
    cfg["run"]["model"]["d_model"] = serde_json::json!(48);
    std::fs::write(shape.join("config.json"), cfg.to_string()).expect("write");
    let nan = copy("nan");
    let weights = tch::Tensor::read_safetensors(nan.join("model.safetensors")).expect("weights");
    for (_, t) in &weights {
        let _ = t.shallow_clone().fill_(f64::NAN);
    }
    tch::Tensor::write_safetensors(&weights, nan.join("model.safetensors")).expect("write");
    m6rec_recommender::saved::write_checksums(&nan, &["model.safetensors", "last.safetensors", "optim.safetensors"])
        .expect("checksums");
    let flipped = copy("flipped");
    let mut bytes = std::fs::read(flipped.join("model.safetensors")).expect("read");
    let at = bytes.len() - 5;
    bytes[at] ^= 1;
    std::fs::write(flipped.join("model.safetensors"), bytes).expect("write");
    for (dir, says) in [(&shape, "another config"), (&nan, "NaN"), (&flipped, "not the file that was saved")] {
        let (st, v) = srv.reload(Some(dir));
        let msg = v["error"]["message"].as_str().unwrap_or("").to_string();
        assert_eq!((st, error_code(&v)), (422, "bad_checkpoint"), "{v}");
        assert!(msg.contains(says) && msg.contains("still serving the previous model"), "{msg}");
        assert!(!msg.contains('/') && !msg.contains(".cpp") && !msg.contains("Exception raised"), "{msg}");
        let (_, now) = srv.post("/v1/recommend", &ask);
        assert_eq!((now["model_generation"].as_u64(), &now["items"]), (Some(1), &before["items"]), "{now}");
    }
    let (st, v) = srv.reload(None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["model_generation"].as_u64(), Some(2));
    let (st, after) = srv.post("/v1/recommend", &ask);
    assert_eq!(st, 200, "{after}");
    assert_eq!(after["model_generation"].as_u64(), Some(2));
    // The same weights re-read give the same answer, the added item included.
    assert_eq!(before["items"], after["items"]);
    assert!(Arc::strong_count(&srv.svc) >= 1);
    srv.shutdown();
    // A server started without a token keeps its admin routes closed.
    let closed_state = tempfile::tempdir().expect("tmp");
    let closed = Server::start_full(closed_state.path(), limits(), m6rec_serve::index::IndexKind::Exact, None, None);
    let (st, v) = closed.call("POST", "/v1/admin/reload", None);
    assert_eq!((st, error_code(&v)), (403, "admin_disabled"), "{v}");
    closed.shutdown();
}

#[test]
fn the_openapi_document_lists_every_route() {
    let state = tempfile::tempdir().expect("tmp");
    let srv = Server::start(state.path(), limits());
    let (st, doc) = srv.call("GET", "/openapi.json", None);
    assert_eq!(st, 200);
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(m6rec_testkit::workspace_root().join("docs/openapi.json")).expect("docs/openapi.json"),
    )
    .expect("valid JSON");
    assert_eq!(doc, committed, "served and committed documents differ");
    for (method, path) in [
        ("post", "/v1/recommend"),
        ("post", "/v1/items"),
        ("post", "/v1/events"),
        ("post", "/v1/admin/reload"),
        ("get", "/healthz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
        // And the route exists: anything but the fallback's no_route.
        let (_, v) = srv.call(&method.to_uppercase(), path, if method == "post" { Some("{}") } else { None });
        assert_ne!(error_code(&v), "no_route", "{path}");
    }
    srv.shutdown();
}

#[test]
fn the_hnsw_index_serves_the_same_api_with_filters_and_new_items() {
    let params = m6rec_serve::index::HnswParams::default();
    an_approximate_index_serves_the_same_api(m6rec_serve::index::IndexKind::Hnsw(params), 0.9);
}

#[test]
fn the_ivf_index_is_tuned_at_start_and_serves_the_same_api_with_filters_and_new_items() {
    // Probing one cell of 76 at first: the service raises the probe until known users' states reach 0.95.
    let params = m6rec_serve::index::IvfParams { lists: 0, probe: 1, target_recall: Some(0.95) };
    an_approximate_index_serves_the_same_api(m6rec_serve::index::IndexKind::Ivf(params), 0.93);
}

/// Recall@10 on the demo catalog at least `min_recall`; seen items, domains and new items handled as by the exact
/// index.
fn an_approximate_index_serves_the_same_api(kind: m6rec_serve::index::IndexKind, min_recall: f64) {
    let state = tempfile::tempdir().expect("tmp");
    let srv = Server::start_with(state.path(), limits(), kind);
    let ds = demo();
    let split = m6rec_data::Split::leave_one_out(&ds.interactions, ds.n_users());
    let seen: Vec<String> = split.sequence(0).iter().map(|&i| ds.items[i as usize].id.clone()).collect();
    let (recall, index) = srv._rt.block_on(srv.svc.index_report(200, 10)).expect("recall");
    assert!(recall >= min_recall, "{index}: recall@10 on the demo catalog {recall}");
    assert!(!index.starts_with("exact") && !index.ends_with("probe 1"), "{index}");
    let domain = ds.items[0].domain.clone();
    let ask = RecommendRequest {
        user_id: Some(ds.users[0].clone()),
        k: 10,
        exclude_seen: true,
        domain: Some(domain.clone()),
        ..Default::default()
    };
    let (st, v) = srv.post("/v1/recommend", &ask);
    assert_eq!(st, 200, "{v}");
    let ids = item_ids(&v);
    assert_eq!(ids.len(), 10);
    assert!(ids.iter().all(|i| !seen.contains(i)), "a seen item came back: {ids:?}");
    assert!(v["items"].as_array().expect("items").iter().all(|x| x["domain"] == domain.as_str()), "{v}");
    let scores: Vec<f64> = v["items"].as_array().expect("items").iter().filter_map(|x| x["score"].as_f64()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // A new item enters the graph and can be recommended.
    let (st, _) = srv.post(
        "/v1/items",
        &ItemsRequest {
            items: vec![ItemIn {
                id: "graph-new".into(),
                title: ds.items[1].title.clone(),
                text: ds.items[1].text.clone(),
                domain: Some(ds.items[1].domain.clone()),
                ..Default::default()
            }],
        },
    );
    assert_eq!(st, 200);
    let all = RecommendRequest {
        history: Some(vec![ds.items[0].id.clone()]),
        k: 50,
        exclude_seen: false,
        ..Default::default()
    };
    let (_, v) = srv.post("/v1/recommend", &all);
    let twin_rank = item_ids(&v).iter().position(|i| *i == ds.items[1].id);
    let new_rank = item_ids(&v).iter().position(|i| i == "graph-new");
    assert!(twin_rank.is_none() || new_rank.is_some(), "its twin is in the top 50 but the new item is not: {v}");
    srv.shutdown();
}

/// Issue 19.1: a large `POST /v1/items` is refused with 413 before any encoder work when it asks for more text than
/// the server takes; one within the limits is embedded a few items at a time, and recommendations sent meanwhile are
/// answered before it finishes.
#[test]
fn large_item_requests_are_bounded_before_work_and_do_not_starve_recommendations() {
    let state = tempfile::tempdir().expect("tmp");
    let lim = Limits {
        max_body: 4 << 20,
        request_timeout: Duration::from_secs(60),
        max_item_text: 4 << 10,
        max_item_tokens: 64 * 40,
        embed_batch: 1,
        ..Limits::default()
    };
    let srv = Server::start(state.path(), lim);
    let ds = demo();
    let words = |n: usize, tag: usize| (0..n).map(|k| format!("word{tag}x{k}")).collect::<Vec<_>>().join(" ");
    let item = |i: usize, n_words: usize| ItemIn {
        id: format!("big-{i}"),
        title: format!("Big {i}"),
        text: Some(words(n_words, i)),
        ..Default::default()
    };
    let catalog = |srv: &Server| srv.call("GET", "/healthz", None).1["catalog_items"].as_u64();
    // 100 items of ~300 words: each reads 64 tokens (the feature cache's max_len), 6,400 in all, over 2,560.
    let (st, v) = srv.post("/v1/items", &ItemsRequest { items: (0..100).map(|i| item(i, 300)).collect() });
    assert_eq!((st, error_code(&v)), (413, "too_much_text"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("--max-item-tokens"), "{v}");
    // One item over the per-item text bound.
    let (st, v) = srv.post("/v1/items", &ItemsRequest { items: vec![item(0, 1000)] });
    assert_eq!((st, error_code(&v)), (413, "item_text_too_long"), "{v}");
    assert_eq!(catalog(&srv), Some(ds.n_items() as u64), "a refused request added nothing");

    // Within the limits (40 items x 64 tokens), one item per encoder forward; recommendations keep flowing.
    let rec = serde_json::to_string(&RecommendRequest {
        history: Some(vec![ds.items[0].id.clone()]),
        k: 5,
        exclude_seen: true,
        ..Default::default()
    })
    .expect("json");
    assert_eq!(srv.call("POST", "/v1/recommend", Some(&rec)).0, 200);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (answered_meanwhile, (st, v)) = std::thread::scope(|s| {
        let (addr, body) = (
            srv.addr,
            serde_json::to_string(&ItemsRequest { items: (0..40).map(|i| item(i, 300)).collect() }).expect("json"),
        );
        let done = &done;
        let items = s.spawn(move || {
            let req = format!(
                "POST /v1/items HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let (st, text) = raw_at(addr, req.as_bytes());
            let r = (st, serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)));
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        let mut meanwhile = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let (st, _) = srv.call("POST", "/v1/recommend", Some(&rec));
            assert_eq!(st, 200);
            if !done.load(std::sync::atomic::Ordering::SeqCst) {
                meanwhile += 1;
            }
        }
        (meanwhile, items.join().expect("items thread"))
    });
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["added"].as_u64(), Some(40), "{v}");
    assert_eq!(catalog(&srv), Some(ds.n_items() as u64 + 40));
    assert!(
        answered_meanwhile >= 3,
        "only {answered_meanwhile} recommendations were answered while 40 items were embedded"
    );
    // The items are recommendable with their own content.
    let (st, v) = srv.post(
        "/v1/recommend",
        &RecommendRequest { history: Some(vec!["big-7".into()]), k: 3, exclude_seen: false, ..Default::default() },
    );
    assert_eq!(st, 200, "{v}");
    srv.shutdown();
}

/// Issue 19.4: a connection that sends its head too slowly, or sits idle, is closed after the header timeout; beyond
/// `max_connections` a connection is closed at accept; the server keeps answering, and shutdown does not wait on a
/// half-sent request.
#[test]
fn slow_idle_and_surplus_connections_are_closed_and_shutdown_is_bounded() {
    use std::time::Instant;
    let state = tempfile::tempdir().expect("tmp");
    let lim = Limits { header_timeout: Duration::from_secs(1), max_connections: 6, ..limits() };
    let srv = Server::start(state.path(), lim);
    // Closed: a read that ends (EOF or reset) rather than timing out.
    let closed_within = |s: &mut TcpStream, limit: Duration| -> Option<Duration> {
        let start = Instant::now();
        s.set_read_timeout(Some(limit)).expect("timeout");
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => continue, // an error answer (408) before the close
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return None
                }
                Err(_) => return Some(start.elapsed()),
            }
        }
    };
    let mut idle = TcpStream::connect(srv.addr).expect("connect");
    let t = closed_within(&mut idle, Duration::from_secs(5));
    assert!(t.is_some_and(|t| t < Duration::from_secs(4)), "an idle connection stayed open: {t:?}");
    // A head at one byte per 200 ms.
    let mut slow = TcpStream::connect(srv.addr).expect("connect");
    let writer = {
        let mut w = slow.try_clone().expect("clone");
        std::thread::spawn(move || {
            for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let t = closed_within(&mut slow, Duration::from_secs(8));
    assert!(t.is_some_and(|t| t < Duration::from_secs(4)), "a slow head kept its connection: {t:?}");
    let _ = writer.join();
    // Six connections hold every slot; a seventh is closed at once, and once the six time out the server answers.
    let mut held: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(srv.addr).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut surplus = TcpStream::connect(srv.addr).expect("connect");
    let t = closed_within(&mut surplus, Duration::from_secs(5));
    assert!(
        t.is_some_and(|t| t < Duration::from_millis(900)),
        "the seventh connection was not closed at accept: {t:?}"
    );
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(5)).is_some());
    }
    let (st, _) = srv.call("GET", "/healthz", None);
    assert_eq!(st, 200);
    let metrics = srv.call("GET", "/metrics", None).1;
    assert!(metrics.as_str().unwrap_or("").contains("m6rec_connections_refused_total 1"), "{metrics}");
    // Shutdown with a half-sent request in flight ends within the header timeout and a little.
    let mut half = TcpStream::connect(srv.addr).expect("connect");
    half.write_all(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Le").expect("write");
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    srv.shutdown();
    assert!(start.elapsed() < Duration::from_secs(5), "shutdown took {:?}", start.elapsed());
}

/// Issue 19.12: media paths are resolved for real under `--media-root`: a symlink inside it that points outside is
/// refused, and a FIFO named as an image is refused at once instead of blocking a thread forever.
#[test]
fn media_paths_that_leave_the_root_or_are_not_files_are_refused() {
    let state = tempfile::tempdir().expect("tmp");
    let outside = tempfile::tempdir().expect("tmp");
    let root = tempfile::tempdir().expect("tmp");
    std::fs::write(outside.path().join("secret.png"), b"not yours").expect("write");
    std::os::unix::fs::symlink(outside.path().join("secret.png"), root.path().join("link.png")).expect("symlink");
    let fifo = root.path().join("pipe.png");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    let srv = Server::start_full(
        state.path(),
        limits(),
        m6rec_serve::index::IndexKind::Exact,
        Some(ADMIN_TOKEN),
        Some(root.path()),
    );
    for (name, says) in [("link.png", "resolves outside"), ("pipe.png", "not a regular file")] {
        let item = ItemIn { id: "m".into(), title: "M".into(), image_path: Some(name.into()), ..Default::default() };
        let (st, v) = srv.post("/v1/items", &ItemsRequest { items: vec![item] });
        assert_eq!((st, error_code(&v)), (422, "bad_media"), "{name}: {v}");
        assert!(v["error"]["message"].as_str().unwrap_or("").contains(says), "{name}: {v}");
    }
    srv.shutdown();
}

/// A body declared larger than `max_body` is refused at once with 413, before the server reads any of it.
#[test]
fn a_declared_oversized_body_is_refused_before_it_is_read() {
    let state = tempfile::tempdir().expect("tmp");
    let srv = Server::start(state.path(), Limits { request_timeout: Duration::from_secs(20), ..limits() });
    let start = std::time::Instant::now();
    let mut s = TcpStream::connect(srv.addr).expect("connect");
    s.write_all(b"POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\n\r\n{\"items\":[")
        .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).expect("an answer before the body");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413") && text.contains("body_too_large"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(5), "answered after {:?}", start.elapsed());
    srv.shutdown();
}

/// A generative checkpoint serves the same API: rankings are the library's beams (filters applied), an empty
/// history gets popularity, a posted item gets a code from its text and is recommendable and usable at once, and
/// it survives a restart and a reload; what only an embedding model has (the top-k index) is refused by name.
#[test]
fn a_generative_checkpoint_is_served_and_new_items_get_codes_at_once() {
    let (_dir, ckpt) = generative_fixture();
    let state = tempfile::tempdir().expect("tmp");
    let ds = demo();
    let n = ds.n_items();
    let start = || {
        Server::start_checkpoint(
            ckpt,
            state.path(),
            limits(),
            m6rec_serve::index::IndexKind::Exact,
            Some(ADMIN_TOKEN),
            None,
        )
    };
    let srv = start();
    let lib = Generative::load(ckpt, tch::Device::Cpu).expect("load");
    let history: Vec<u32> = vec![3, 17, 42, 8];
    let ids = |h: &[u32]| h.iter().map(|&i| ds.items[i as usize].id.clone()).collect::<Vec<_>>();
    let ask = RecommendRequest { history: Some(ids(&history)), k: 10, exclude_seen: false, ..Default::default() };
    let (st, v) = srv.post("/v1/recommend", &ask);
    assert_eq!(st, 200, "{v}");
    let beams = lib.beams(&[&history], 20).expect("beams");
    let expected: Vec<String> = beams[0].iter().take(10).map(|b| ds.items[b.item as usize].id.clone()).collect();
    assert_eq!(item_ids(&v), expected, "the service ranks as the library's beam search");
    // Seen items filtered: none of the history comes back, still 10 items.
    let (_, v) = srv.post("/v1/recommend", &RecommendRequest { exclude_seen: true, ..ask.clone() });
    let got = item_ids(&v);
    assert_eq!(got.len(), 10, "{v}");
    assert!(got.iter().all(|i| !ids(&history).contains(i)), "{got:?}");
    // An empty history: popularity.
    let (st, v) =
        srv.post("/v1/recommend", &RecommendRequest { history: Some(Vec::new()), k: 5, ..Default::default() });
    assert_eq!(st, 200, "{v}");
    assert_eq!(item_ids(&v).len(), 5);

    // A new item, with item 3's text: it gets a code at once; with a beam over the whole catalog it is ranked.
    let twin = &ds.items[3];
    let item =
        ItemIn { id: "fresh-gen".into(), title: twin.title.clone(), text: twin.text.clone(), ..Default::default() };
    let (st, v) = srv.post("/v1/items", &ItemsRequest { items: vec![item] });
    assert_eq!(st, 200, "{v}");
    assert_eq!((v["added"].as_u64(), v["catalog_size"].as_u64()), (Some(1), Some(n as u64 + 1)));
    let whole = RecommendRequest { k: n + 1, ..ask.clone() };
    let (st, v) = srv.post("/v1/recommend", &whole);
    assert_eq!(st, 200, "{v}");
    let ranked = item_ids(&v);
    assert_eq!(ranked.len(), n + 1, "a beam as wide as the catalog ranks every item");
    assert!(ranked.contains(&"fresh-gen".to_string()));
    let with_new = RecommendRequest { history: Some(vec![twin.id.clone(), "fresh-gen".into()]), ..ask.clone() };
    let (st, before) = srv.post("/v1/recommend", &with_new);
    assert_eq!(st, 200, "{before}");
    assert_eq!(item_ids(&before).len(), 10);
    // The index report is an embedding model's: refused by name, the server keeps serving.
    let err = srv._rt.block_on(srv.svc.index_recall(10, 10)).expect_err("no index");
    assert_eq!(err.code, "not_an_embedding_model", "{}", err.message);
    srv.shutdown();

    // Restart: the item and its code are back, the same history gets the same answer.
    let srv = start();
    let (_, after) = srv.post("/v1/recommend", &with_new);
    assert_eq!(after["items"], before["items"]);
    // A reload of the same checkpoint gives the added item its code again.
    let (st, v) = srv.reload(None);
    assert_eq!(st, 200, "{v}");
    let (_, reloaded) = srv.post("/v1/recommend", &with_new);
    assert_eq!(item_ids(&reloaded), item_ids(&before));
    assert_eq!(reloaded["model_generation"].as_u64(), Some(2));
    srv.shutdown();
}
