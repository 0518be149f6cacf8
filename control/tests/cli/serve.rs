//! `warden serve` as a real process on loopback: ETags and 304, uploads (401/403/422/409/success), history, healthz.

use crate::support::serve::*;
use crate::support::*;
use warden_core::envelope::{sha256_hex, Algorithm};

#[test]
fn serves_with_etags_and_accepts_only_verified_newer_uploads() {
    let scratch = Scratch::new("serve");
    let (_, jwks, key) = scratch.key(Algorithm::EdDSA, "authority-1");
    let (_, _, stranger) = scratch.key(Algorithm::EdDSA, "stranger");
    let dir = scratch.path("bundles");
    std::fs::create_dir(&dir).unwrap();
    let v5 = sign(&bundle(5), &key);
    std::fs::write(dir.join("support.jws"), &v5).unwrap();
    let token_file = scratch.write("token", format!("{TOKEN}\n"));
    let server = start(&dir, &jwks, &token_file);
    let addr = server.addr.as_str();

    // GET with a strong ETag, then 304 for it, for `*`, and inside a list; 200 for another tag.
    let r = http(addr, "GET", "/bundles/support.jws", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, v5.as_bytes());
    let etag = format!("\"sha256-{}\"", sha256_hex(v5.as_bytes()));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("content-type"), Some("application/jose"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    for inm in [etag.clone(), "*".to_string(), format!("\"sha256-00\", {etag}")] {
        let r = http(addr, "GET", "/bundles/support.jws", &[("If-None-Match", &inm)], b"");
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    let r = http(addr, "GET", "/bundles/support.jws", &[("If-None-Match", "\"sha256-00\"")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(http(addr, "GET", "/bundles/nothing.jws", &[], b"").status, 404);
    assert_eq!(http(addr, "GET", "/bundles/..%2Fsecret.jws", &[], b"").status, 404);

    // Unauthenticated, wrong token.
    let v6 = sign(&bundle(6), &key);
    let r = put(addr, "support", None, v6.as_bytes());
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthenticated");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"warden\""));
    let r = put(addr, "support", Some("not-the-token-at-all-0000"), v6.as_bytes());
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");

    // Signed by a key that is not pinned, tampered, or not a JWS at all: 422 with the verifier's reason.
    let r = put(addr, "support", Some(TOKEN), sign(&bundle(6), &stranger).as_bytes());
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"], "not_verified");
    assert_eq!(r.json()["message"], "signed bundle: kid \"stranger\" is not one of the pinned authority keys");
    let (head, rest) = v6.split_once('.').unwrap();
    let other_payload = sign(&bundle(7), &key);
    let tampered = format!("{head}.{}.{}", other_payload.split('.').nth(1).unwrap(), rest.split('.').nth(1).unwrap());
    let r = put(addr, "support", Some(TOKEN), tampered.as_bytes());
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["message"], "signed bundle: signature does not verify with the pinned key \"authority-1\"");
    let r = put(addr, "support", Some(TOKEN), b"{\"revision\": 99}");
    assert_eq!(r.status, 422);

    // Verifies but does not validate: 422 with the validation errors.
    let mut invalid = bundle(6);
    invalid["rules"][0]["tools"] = serde_json::json!(["no.such.tool"]);
    let r = put(addr, "support", Some(TOKEN), sign(&invalid, &key).as_bytes());
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"], "invalid_bundle");
    assert!(r.json()["errors"][0].as_str().unwrap().ends_with("/rules/0/tools/0: unknown tool \"no.such.tool\""));

    // Rollback and replay: 409.
    for old in [sign(&bundle(4), &key), sign(&bundle(5), &key)] {
        let r = put(addr, "support", Some(TOKEN), old.as_bytes());
        assert_eq!(r.status, 409);
        assert_eq!(r.json()["error"], "rollback");
        assert_eq!(r.json()["current_revision"], 5);
    }
    // Nothing changed so far.
    assert_eq!(std::fs::read(dir.join("support.jws")).unwrap(), v5.as_bytes());
    assert!(!dir.join("history").exists());

    // A good upload: new ETag, history kept, served at once.
    let r = put(addr, "support", Some(TOKEN), v6.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let new_etag = format!("\"sha256-{}\"", sha256_hex(v6.as_bytes()));
    assert_eq!(r.header("etag"), Some(new_etag.as_str()));
    assert_eq!(r.json()["revision"], 6);
    assert_eq!(r.json()["previous_revision"], 5);
    assert_eq!(std::fs::read(dir.join("history/support.5.jws")).unwrap(), v5.as_bytes());
    let r = http(addr, "GET", "/bundles/support.jws", &[("If-None-Match", &etag)], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some(new_etag.as_str()));
    assert_eq!(r.body, v6.as_bytes());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A first upload under a new name: 201.
    let r = put(addr, "finance", Some(TOKEN), sign(&bundle(1), &key).as_bytes());
    assert_eq!(r.status, 201);

    // Health: the current revision of each bundle.
    let r = http(addr, "GET", "/healthz", &[], b"");
    assert_eq!(r.status, 200);
    let h = r.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["bundles"]["support"]["revision"], 6);
    assert_eq!(h["bundles"]["support"]["etag"], new_etag.as_str());
    assert_eq!(h["bundles"]["support"]["verified"], true);
    assert_eq!(h["bundles"]["finance"]["revision"], 1);

    assert_eq!(http(addr, "DELETE", "/bundles/support.jws", &[], b"").status, 405);
    assert_eq!(http(addr, "GET", "/", &[], b"").status, 404);
}

#[test]
fn refuses_a_non_loopback_listen_address() {
    let scratch = Scratch::new("serve-listen");
    let (_, jwks, _) = scratch.key(Algorithm::EdDSA, "a");
    let token = scratch.write("token", TOKEN);
    let o = warden([
        "serve".as_ref(),
        "--listen".as_ref(),
        "0.0.0.0:0".as_ref(),
        "--dir".as_ref(),
        scratch.0.as_os_str(),
        "--keys".as_ref(),
        jwks.as_os_str(),
        "--authority".as_ref(),
        AUTHORITY.as_ref(),
        "--upload-token-file".as_ref(),
        token.as_os_str(),
    ] as [&std::ffi::OsStr; 11]);
    assert_exit(&o, 2);
    assert_eq!(
        stderr(&o),
        "warden: error: --listen 0.0.0.0:0: not a loopback address; refusing to expose the control endpoint \
         (pass --allow-non-loopback, and put TLS in front of it)\n"
    );
}
