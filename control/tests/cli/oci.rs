//! `warden oci` against a real registry: the image layout it writes is pushed to CNCF distribution (Debian's
//! `docker-registry`, started on a free loopback port) over the registry API, pulled back by the digest `warden oci`
//! printed, and the module inside the pulled layer is byte-identical to warden.wasm.
//!
//! scripts/test.sh installs `docker-registry` when run as root on Debian; elsewhere: `apt-get install docker-registry`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::serve::{read_reply, Reply};
use crate::support::*;
use serde_json::Value;
use warden_core::envelope::sha256_hex;

const REGISTRY: &str = "/usr/bin/docker-registry";

/// The module the tests run: WARDEN_WASM (scripts/test.sh sets it), else the default build output.
fn warden_wasm() -> PathBuf {
    let path = std::env::var_os("WARDEN_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/wasm32-wasip1/wasm/warden.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p warden-filter --target wasm32-wasip1 --profile wasm`",
        path.display()
    );
    path
}

/// A registry process, killed when dropped.
struct Registry {
    child: Child,
    addr: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(scratch: &Scratch) -> Registry {
    assert!(
        Path::new(REGISTRY).is_file(),
        "{REGISTRY} is missing: install CNCF distribution with `apt-get install docker-registry` (scripts/test.sh \
         does when run as root on Debian)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let storage = scratch.path("registry");
    let config = scratch.write(
        "registry.yml",
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            storage.display()
        ),
    );
    let child = Command::new(REGISTRY)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(scratch.path("registry.log")).unwrap())
        .spawn()
        .unwrap();
    let registry = Registry { child, addr };
    for _ in 0..200 {
        if TcpStream::connect(&registry.addr).is_ok() && call(&registry.addr, "GET", "/v2/", &[], b"").status == 200 {
            return registry;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the registry did not come up: {}",
        std::fs::read_to_string(scratch.path("registry.log")).unwrap_or_default()
    );
}

/// One request to the registry (`Connection: close`).
fn call(addr: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "PUT" || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    read_reply(&mut raw.as_slice())
}

/// Pushes a blob with the distribution API's two-step upload (POST, then PUT with the digest).
fn push_blob(addr: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let r = call(addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let location = r.header("location").unwrap().to_string();
    let location = location.strip_prefix(&format!("http://{addr}")).unwrap_or(&location).to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = call(
        addr,
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    digest
}

/// The one file of a ustar archive.
fn untar_one(tar: &[u8]) -> (String, Vec<u8>) {
    let name = String::from_utf8(tar[..100].split(|b| *b == 0).next().unwrap().to_vec()).unwrap();
    let size = usize::from_str_radix(std::str::from_utf8(&tar[124..135]).unwrap(), 8).unwrap();
    (name, tar[512..512 + size].to_vec())
}

#[test]
fn the_image_round_trips_through_a_registry_by_digest() {
    let scratch = Scratch::new("oci");
    let wasm_path = warden_wasm();
    let wasm = std::fs::read(&wasm_path).unwrap();
    let layout = scratch.path("image");
    let o = warden([
        "oci".as_ref(),
        "--wasm".as_ref(),
        wasm_path.as_os_str(),
        "--out".as_ref(),
        layout.as_os_str(),
        "--tag".as_ref(),
        "0.1.0".as_ref(),
    ] as [&std::ffi::OsStr; 7]);
    assert_exit(&o, 0);
    let digest = stdout(&o).trim().to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    assert!(stderr(&o).contains(&format!("module:   sha256:{}", sha256_hex(&wasm))), "{}", stderr(&o));

    // The layout: oci-layout, index.json naming the manifest by digest and tag, every blob under its digest.
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "0.1.0");
    let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let manifest_bytes = blob(&digest);
    assert_eq!(format!("sha256:{}", sha256_hex(&manifest_bytes)), digest);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();

    // Push every blob and the manifest to a real registry.
    let registry = start_registry(&scratch);
    let addr = registry.addr.as_str();
    let repo = "warden/warden-wasm";
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    assert_eq!(push_blob(addr, repo, &blob(&layer_digest)), layer_digest);
    assert_eq!(push_blob(addr, repo, &blob(&config_digest)), config_digest);
    let r = call(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/0.1.0"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        &manifest_bytes,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()), "the registry computes the same digest");

    // Pull back by digest, as Istio does with `sha256` set, and by tag.
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let pulled = call(addr, "GET", &format!("/v2/{repo}/manifests/{digest}"), &accept, b"");
    assert_eq!(pulled.status, 200);
    assert_eq!(pulled.body, manifest_bytes);
    assert_eq!(pulled.header("content-type"), Some("application/vnd.oci.image.manifest.v1+json"));
    let by_tag = call(addr, "GET", &format!("/v2/{repo}/manifests/0.1.0"), &accept, b"");
    assert_eq!(by_tag.header("docker-content-digest"), Some(digest.as_str()));
    let pulled: Value = serde_json::from_slice(&pulled.body).unwrap();
    assert_eq!(pulled["layers"].as_array().unwrap().len(), 1);
    assert_eq!(pulled["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(pulled["annotations"]["module.wasm.image/variant"], "compat");
    let layer = call(addr, "GET", &format!("/v2/{repo}/blobs/{layer_digest}"), &[], b"");
    assert_eq!(layer.status, 200);
    assert_eq!(format!("sha256:{}", sha256_hex(&layer.body)), layer_digest);
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(layer.body.as_slice()).read_to_end(&mut tar).unwrap();
    let (name, module) = untar_one(&tar);
    assert_eq!(name, "plugin.wasm");
    assert!(module == wasm, "the module pulled back differs from warden.wasm");

    // Reproducible: the same module gives the same digest.
    let again = scratch.path("again");
    let o = warden([
        "oci".as_ref(),
        "--wasm".as_ref(),
        wasm_path.as_os_str(),
        "--out".as_ref(),
        again.as_os_str(),
        "--tag".as_ref(),
        "0.1.0".as_ref(),
    ] as [&std::ffi::OsStr; 7]);
    assert_eq!(stdout(&o).trim(), digest);
}

#[test]
fn refuses_what_is_not_a_module_and_a_used_directory() {
    let scratch = Scratch::new("oci-refusals");
    let not_wasm = scratch.write("x.wasm", "hello");
    let out = scratch.path("out");
    let o = warden(["oci".as_ref(), "--wasm".as_ref(), not_wasm.as_os_str(), "--out".as_ref(), out.as_os_str()]
        as [&std::ffi::OsStr; 5]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("not a WebAssembly module"), "{}", stderr(&o));
    let wasm = scratch.write("m.wasm", b"\0asm\x01\0\0\0");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("something"), "x").unwrap();
    let o = warden(["oci".as_ref(), "--wasm".as_ref(), wasm.as_os_str(), "--out".as_ref(), out.as_os_str()]
        as [&std::ffi::OsStr; 5]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("is not empty"), "{}", stderr(&o));
}
