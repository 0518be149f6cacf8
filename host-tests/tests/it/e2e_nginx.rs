//! The same signed bundle served by nginx as a static file: `warden.wasm` in the host (2 worker VMs, manual clock)
//! polls nginx started by the test on loopback; the bundle activates, nginx answers `304 Not Modified` to the
//! filter's `If-None-Match` (nginx's `"<mtime>-<size>"` ETag) while the file is unchanged, and a new revision written
//! atomically over the file (temporary file + rename, as `control/README.md` tells publishers to) is picked up.
//!
//! nginx (Debian package `nginx-light` or `nginx`, `/usr/sbin/nginx`) runs as the current user with a generated
//! minimal configuration in a temporary directory (`daemon off; master_process off;`, every path it writes inside
//! that directory). `scripts/test.sh` installs it when it is missing and it can; without it this test fails.
//! Run: `cargo test -p warden-host --test it e2e_nginx::`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::live::*;
use serde_json::json;
use warden_host::http_call::{self, CallResult};
use warden_host::HttpResponse;

const NGINX: &str = "/usr/sbin/nginx";

fn nginx_bin() -> PathBuf {
    if Path::new(NGINX).is_file() {
        return PathBuf::from(NGINX);
    }
    panic!(
        "{NGINX} is missing: install nginx with `apt-get install nginx-light` (or `apt-get install nginx`); \
         scripts/test.sh does it when run as root"
    );
}

/// nginx on `127.0.0.1:<port>` serving `<dir>/www`; killed (by its handle) on drop.
pub(crate) struct Nginx {
    child: Child,
    pub(crate) addr: SocketAddr,
    dir: TempDir,
}

impl Nginx {
    pub(crate) fn start() -> Nginx {
        let bin = nginx_bin();
        let dir = TempDir::new("nginx");
        std::fs::create_dir_all(dir.join("www/bundles")).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        // Temporary-file paths of the modules this nginx has (their compiled-in defaults are under /var/lib/nginx).
        let version = Command::new(&bin).arg("-V").output().expect("nginx -V");
        let build = String::from_utf8_lossy(&version.stderr).into_owned() + &String::from_utf8_lossy(&version.stdout);
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let conf = nginx_conf(dir.path(), port, &build);
            std::fs::write(dir.join("nginx.conf"), conf).unwrap();
            let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
            let mut child = Command::new(&bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(stderr))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!(
                        "nginx exited ({status}):\n{}{}",
                        std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default(),
                        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Nginx { child, addr, dir };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("nginx did not accept connections on {addr} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !last_error.contains("Address already in use") {
                break;
            }
        }
        panic!("{last_error}");
    }

    fn bundle_path(&self) -> PathBuf {
        self.dir.join("www/bundles/bundle.jws")
    }

    /// Publishes a signed bundle the way a static server must be fed: written next to the served file, then renamed
    /// over it.
    pub(crate) fn publish(&self, jws: &str) {
        write_atomically(&self.bundle_path(), jws.as_bytes());
    }

    fn get(&self, if_none_match: Option<&str>) -> HttpResponse {
        let mut headers = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), CONTROL_PATH.to_string()),
            (":authority".to_string(), CONTROL_AUTHORITY.to_string()),
            ("user-agent".to_string(), "e2e-nginx-test".to_string()),
        ];
        if let Some(tag) = if_none_match {
            headers.push(("if-none-match".to_string(), tag.to_string()));
        }
        match http_call::request(self.addr, &headers, &[]) {
            CallResult::Response(r) => r,
            CallResult::Reset => panic!("nginx reset the connection"),
        }
    }

    /// Statuses nginx logged for the filter's fetches of the bundle (its access log, this test's own requests left
    /// out).
    fn fetch_statuses(&self) -> Vec<u16> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(&format!("\"GET {CONTROL_PATH} ")) && !l.contains("e2e-nginx-test"))
            .filter_map(|l| l.split("\" ").nth(1)?.split(' ').next()?.parse().ok())
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The minimal configuration: foreground, one process, every file it writes in `dir`, `dir/www` served on
/// loopback with ETags and `.jws` as `application/jose`.
fn nginx_conf(dir: &Path, port: u16, build: &str) -> String {
    let d = dir.display();
    let mut temp_paths = format!("    client_body_temp_path {d}/tmp/body;\n");
    for module in ["proxy", "fastcgi", "uwsgi", "scgi"] {
        if !build.contains(&format!("--without-http_{module}_module")) {
            temp_paths.push_str(&format!("    {module}_temp_path {d}/tmp/{module};\n"));
        }
    }
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
{temp_paths}    types {{ application/jose jws; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        etag on;
        add_header Cache-Control \"no-cache\" always;
    }}
}}
"
    )
}

#[test]
fn a_bundle_served_by_nginx_activates_and_updates_with_304s_in_between() {
    let nginx = Nginx::start();
    nginx.publish(&sign(&bundle(5)));
    let first = nginx.get(None);
    assert_eq!(first.status(), Some(200));
    assert_eq!(header(&first, "content-type").as_deref(), Some("application/jose"));
    let etag = header(&first, "etag").expect("nginx sends an ETag");
    assert_eq!(nginx.get(Some(&etag)).status(), Some(304), "nginx answers If-None-Match with 304");

    let mut p = start(&config_for_nginx(), 2, nginx.addr);
    for w in 0..2 {
        assert_eq!(state(&mut p, w), (503, "no_active_bundle".into(), None));
    }
    step(&mut p, 2);
    assert_eq!(revisions(&mut p), vec![Some(5), Some(5)], "{:#?}", p.logs());
    for w in 0..2 {
        assert!(allowed(&read(&mut p, w)), "worker {w}");
        assert!(denied_by_rule(&write(&mut p, w)), "worker {w}");
    }

    // Unchanged file: the filter sends nginx's ETag back and gets 304s.
    step(&mut p, 9);
    let not_modified = metric(&p, "warden.bundle.fetch.not_modified");
    assert!(not_modified >= 2, "{not_modified} 304s in 9 s at a 3 s period");
    assert_eq!(fetches(&p), 1 + not_modified, "only 200 and 304, no failure");

    // A new revision that revokes the bot, renamed over the served file.
    nginx.publish(&sign(&revoking_bundle(6)));
    let new_etag = header(&nginx.get(None), "etag").expect("etag");
    assert_ne!(new_etag, etag, "nginx's ETag (mtime-size) changed with the file");
    let published = now(&p);
    step(&mut p, 3);
    assert_eq!(revisions(&mut p), vec![Some(6), Some(6)], "{:#?}", p.logs());
    eprintln!("revision 6 enforced by both workers {} s (host clock) after the file changed", now(&p) - published);
    for w in 0..2 {
        assert_eq!(read(&mut p, w), (401, "revoked_agent".into()), "worker {w}");
        assert_eq!(write(&mut p, w), (401, "revoked_agent".into()), "worker {w}");
    }
    step(&mut p, 6);
    assert_eq!(metric(&p, "warden.bundle.fetch.success"), 2);
    assert_eq!(failures(&p), 0);
    assert!(metric(&p, "warden.bundle.fetch.not_modified") > not_modified, "304s after the update too");

    // nginx's own account: a 200 for each revision, 304s in between and after.
    // (nginx writes the log line after sending the reply: give the last one a moment.)
    let expected = 2 + metric(&p, "warden.bundle.fetch.not_modified") as usize;
    let deadline = Instant::now() + Duration::from_secs(2);
    while nginx.fetch_statuses().len() < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let statuses = nginx.fetch_statuses();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 304).count() as i64, metric(&p, "warden.bundle.fetch.not_modified"));
    let second_200 = statuses.iter().rposition(|s| *s == 200).unwrap();
    assert!(statuses[1..second_200].iter().all(|s| *s == 304) && second_200 > 1, "{statuses:?}");
}

fn config_for_nginx() -> serde_json::Value {
    config(json!({"poll_seconds": 3, "jitter_percent": 0}), None)
}
