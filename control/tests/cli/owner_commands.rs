//! The policy owner's commands on real files: `init` → `lint` / `test` / `fmt --check` → `token` → `eval`, and
//! `publish` to a real `warden serve` (with its preconditions); `fmt` refusals, `keygen --for`, a signed file given
//! to `lint`, `$schema` in a bundle; `diff` of a signed bundle in force against a proposal.

use crate::support::serve::*;
use crate::support::*;
use std::ffi::OsStr;

fn run<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> std::process::Output {
    warden(args)
}

#[test]
fn init_gives_a_bundle_that_lints_tests_and_is_canonical_and_tokens_decide() {
    let s = Scratch::new("init");
    let dir = s.path("policy");
    let o = run([OsStr::new("init"), dir.as_os_str(), OsStr::new("--scenario"), OsStr::new("support")]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("warden test "), "{}", stdout(&o));
    let bundle = dir.join("bundle.json");
    assert_exit(&run([OsStr::new("lint"), bundle.as_os_str()]), 0);
    let o = run([OsStr::new("test"), bundle.as_os_str(), dir.join("bundle.cases.json").as_os_str()]);
    assert_exit(&o, 0);
    assert!(stdout(&o).ends_with(" 0 failed\n"), "{}", stdout(&o));
    assert_exit(&run([OsStr::new("fmt"), OsStr::new("--check"), bundle.as_os_str()]), 0);
    let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    assert_eq!(b["$schema"], "./bundle.schema.json");
    assert!(dir.join("bundle.schema.json").is_file());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join("keys/authority.jwk.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The issuer key init made is the one in the bundle: a token it mints is verified and allowed.
    let o = run([
        OsStr::new("token"),
        OsStr::new("--key"),
        dir.join("keys/issuer-acme-workload.jwk.json").as_os_str(),
        OsStr::new("--iss"),
        OsStr::new("https://spire.acme.example"),
        OsStr::new("--sub"),
        OsStr::new("spiffe://acme.example/agents/support/bot-1"),
        OsStr::new("--issued-at"),
        OsStr::new("2026-11-28T09:59:00Z"),
    ]);
    assert_exit(&o, 0);
    let token = stdout(&o).trim().to_string();
    assert_eq!(token.split('.').count(), 3);
    let request = s.write(
        "request.json",
        serde_json::json!({"method": "GET", "host": "crm.acme.example", "path": "/api/v2/contacts/42",
                           "headers": {"authorization": format!("Bearer {token}")}})
        .to_string(),
    );
    let o = run([
        OsStr::new("eval"),
        OsStr::new("--bundle"),
        bundle.as_os_str(),
        OsStr::new("--environment"),
        OsStr::new("prod"),
        OsStr::new("--now"),
        OsStr::new("2026-11-28T10:00:00Z"),
        OsStr::new("--expect"),
        OsStr::new("allow"),
        request.as_os_str(),
    ]);
    assert_exit(&o, 0);
    // A token from another key is refused by the same bundle.
    let o = run([
        OsStr::new("token"),
        OsStr::new("--key"),
        root().join("policies/examples/keys/TEST-ONLY-issuer-acme-ci.jwk.json").as_os_str(),
        OsStr::new("--iss"),
        OsStr::new("https://spire.acme.example"),
        OsStr::new("--sub"),
        OsStr::new("spiffe://acme.example/agents/support/bot-1"),
        OsStr::new("--issued-at"),
        OsStr::new("2026-11-28T09:59:00Z"),
    ]);
    let other = stdout(&o).trim().to_string();
    std::fs::write(
        &request,
        serde_json::json!({"method": "GET", "host": "crm.acme.example", "path": "/api/v2/contacts/42",
                           "headers": {"authorization": format!("Bearer {other}")}})
        .to_string(),
    )
    .unwrap();
    let o = run([
        OsStr::new("eval"),
        OsStr::new("--bundle"),
        bundle.as_os_str(),
        OsStr::new("--environment"),
        OsStr::new("prod"),
        OsStr::new("--now"),
        OsStr::new("2026-11-28T10:00:00Z"),
        OsStr::new("--expect"),
        OsStr::new("allow"),
        request.as_os_str(),
    ]);
    assert_exit(&o, 1);
    // init never writes into a used directory.
    let o = run([OsStr::new("init"), dir.as_os_str()]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("is not empty"), "{}", stderr(&o));
}

#[test]
fn fmt_formats_checks_and_refuses_duplicates_with_their_place() {
    let s = Scratch::new("fmt");
    let messy = s.write("b.json", "{\"revision\": 3, \"format\":\"x\",\n\"a\": [1,2]}");
    let o = run([OsStr::new("fmt"), OsStr::new("--check"), messy.as_os_str()]);
    assert_exit(&o, 1);
    assert_eq!(stdout(&o), format!("{0}: not canonical (run `warden fmt {0}`)\n", messy.display()));
    assert_eq!(std::fs::read_to_string(&messy).unwrap(), "{\"revision\": 3, \"format\":\"x\",\n\"a\": [1,2]}");
    assert_exit(&run([OsStr::new("fmt"), messy.as_os_str()]), 0);
    assert_eq!(
        std::fs::read_to_string(&messy).unwrap(),
        "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"format\": \"x\",\n  \"revision\": 3\n}\n"
    );
    assert_exit(&run([OsStr::new("fmt"), OsStr::new("--check"), messy.as_os_str()]), 0);
    let dup = s.write("dup.json", "{\n  \"rules\": [{\"id\": \"a\", \"id\": \"b\"}]\n}\n");
    let o = run([OsStr::new("fmt"), dup.as_os_str()]);
    assert_exit(&o, 1);
    assert_eq!(stdout(&o), format!("{}:2:28: the member \"id\" appears twice in one object\n", dup.display()));
}

#[test]
fn publish_uploads_with_its_preconditions_and_says_what_gateways_see() {
    let s = Scratch::new("publish");
    let (private, jwks, key) = s.key(warden_core::envelope::Algorithm::EdDSA, "authority-1");
    let dir = s.path("bundles");
    std::fs::create_dir(&dir).unwrap();
    let token_file = s.write("token", format!("{TOKEN}\n"));
    let server = start(&dir, &jwks, &token_file);
    let url = format!("http://{}/bundles/support.jws", server.addr);
    let publish = |file: &std::path::Path, extra: &[&str]| {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("publish"),
            file.as_os_str(),
            OsStr::new("--key"),
            private.as_os_str(),
            OsStr::new("--to"),
            OsStr::new(&url),
            OsStr::new("--upload-token-file"),
            token_file.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        run(args)
    };
    let v1 = s.write("v1.json", serde_json::to_string_pretty(&bundle(1)).unwrap());
    let o = publish(&v1, &[]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("  revision:   1 (previous: none)"), "{}", stdout(&o));
    assert!(stdout(&o).contains("gateways polling /bundles/support.jws see revision 1"), "{}", stdout(&o));
    let served = http(&server.addr, "GET", "/bundles/support.jws", &[], b"");
    assert_eq!(served.status, 200);

    // Not higher: refused before uploading.
    let o = publish(&v1, &[]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("revision 1 is not higher than the current revision 1"), "{}", stderr(&o));
    // Reviewed against another revision: refused.
    let v2 = s.write("v2.json", serde_json::to_string_pretty(&bundle(2)).unwrap());
    let o = publish(&v2, &["--expect-previous", "7"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("the endpoint has revision 1, not the expected revision 7"), "{}", stderr(&o));
    let o = publish(&v2, &["--expect-previous", "1"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("  revision:   2 (previous: 1)"), "{}", stdout(&o));

    // The server's side of the precondition: a stale If-Match is 412, the file stays.
    let stale = format!("\"sha256-{}\"", warden_core::envelope::sha256_hex(&served.body));
    let auth = format!("Bearer {TOKEN}");
    let v3 = sign(&bundle(3), &key);
    let r = http(
        &server.addr,
        "PUT",
        "/bundles/support.jws",
        &[("Authorization", &auth), ("If-Match", &stale)],
        v3.as_bytes(),
    );
    assert_eq!(r.status, 412);
    assert_eq!(r.json()["error"], "precondition_failed");
    assert_eq!(r.json()["current_revision"], 2);
    let r = http(
        &server.addr,
        "PUT",
        "/bundles/support.jws",
        &[("Authorization", &auth), ("If-None-Match", "*")],
        v3.as_bytes(),
    );
    assert_eq!(r.status, 412);

    // A bundle that does not validate is not published.
    let mut bad = bundle(4);
    bad["rules"][0]["tools"] = serde_json::json!(["no.such.tool"]);
    let bad = s.write("bad.json", serde_json::to_string_pretty(&bad).unwrap());
    let o = publish(&bad, &[]);
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("unknown tool \"no.such.tool\""), "{}", stdout(&o));
}

#[test]
fn keygen_says_where_each_kind_of_key_goes() {
    let s = Scratch::new("keygen-kinds");
    for (kind, says) in
        [("authority", "pin "), ("approver", "do not pin them in gateways"), ("issuer", "`issuers[].jwks`")]
    {
        let out = s.path(&format!("{kind}.jwk.json"));
        let public = s.path(&format!("{kind}.jwks.json"));
        let o = run([
            OsStr::new("keygen"),
            OsStr::new("--for"),
            OsStr::new(kind),
            OsStr::new("--kid"),
            OsStr::new("k1"),
            OsStr::new("--out"),
            out.as_os_str(),
            OsStr::new("--public"),
            public.as_os_str(),
        ]);
        assert_exit(&o, 0);
        assert!(stderr(&o).contains(says), "{kind}: {}", stderr(&o));
    }
}

#[test]
fn lint_recognises_a_signed_file_and_accepts_schema() {
    let s = Scratch::new("lint-signed");
    let (_, _, key) = s.key(warden_core::envelope::Algorithm::EdDSA, "a");
    let signed = s.write("b.jws", sign(&bundle(1), &key));
    let o = run([OsStr::new("lint"), signed.as_os_str()]);
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("this is a signed bundle (JWS), not bundle JSON"), "{}", stdout(&o));
    assert!(stdout(&o).contains(&format!("warden verify {}", signed.display())), "{}", stdout(&o));
    let mut b = bundle(1);
    b["$schema"] = "../policies/bundle.schema.json".into();
    let with_schema = s.write("schema.json", serde_json::to_string_pretty(&b).unwrap());
    assert_exit(&run([OsStr::new("lint"), with_schema.as_os_str()]), 0);
}

#[test]
fn init_with_an_existing_authority_key_writes_only_its_public_half() {
    let s = Scratch::new("init-key");
    let dir = s.path("policy");
    let key = root().join("policies/examples/keys/TEST-ONLY-authority.jwk.json");
    let o = run([OsStr::new("init"), dir.as_os_str(), OsStr::new("--authority-key"), key.as_os_str()]);
    assert_exit(&o, 0);
    assert!(!dir.join("keys/authority.jwk.json").exists(), "no new private authority key");
    let written = std::fs::read_to_string(dir.join("keys/authority.jwks.json")).unwrap();
    let pinned = std::fs::read_to_string(root().join("policies/examples/keys/TEST-ONLY-authority.jwks.json")).unwrap();
    let keys = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap()["keys"][0]["x"].clone();
    assert_eq!(keys(&written), keys(&pinned), "the public half of the given key");
    assert!(stdout(&o).contains(&format!("--key {}", key.display())), "{}", stdout(&o));
    // Signed with it, the bundle verifies against the keys gateways pin.
    let signed = s.path("bundle.jws");
    let bundle = dir.join("bundle.json");
    assert_exit(
        &run([
            OsStr::new("sign"),
            bundle.as_os_str(),
            OsStr::new("--key"),
            key.as_os_str(),
            OsStr::new("--out"),
            signed.as_os_str(),
        ]),
        0,
    );
    let pinned_path = root().join("policies/examples/keys/TEST-ONLY-authority.jwks.json");
    let o = run([
        OsStr::new("verify"),
        signed.as_os_str(),
        OsStr::new("--keys"),
        pinned_path.as_os_str(),
        OsStr::new("--authority"),
        OsStr::new("policy.acme.example"),
    ]);
    assert_exit(&o, 0);
    // A key file that is not a private JWK is a usage error naming it.
    let o =
        run([OsStr::new("init"), s.path("other").as_os_str(), OsStr::new("--authority-key"), pinned_path.as_os_str()]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("TEST-ONLY-authority.jwks.json"), "{}", stderr(&o));
    assert!(!s.path("other").exists(), "nothing written");
}

#[test]
fn diff_compares_the_signed_bundle_in_force_with_a_proposal() {
    let s = Scratch::new("diff");
    let (_, public, key) = s.key(warden_core::envelope::Algorithm::EdDSA, "authority-1");
    let old = bundle(1);
    let in_force = s.write("in-force.jws", sign(&old, &key));
    let mut new = bundle(2);
    new["rules"][0]["agents"] = serde_json::json!(["spiffe://acme.example/agents/*"]);
    new["revocations"] = serde_json::json!({"tasks": ["T-leaked"]});
    let proposal = s.write("proposal.json", pretty(&new));
    let keys = [OsStr::new("--keys"), public.as_os_str(), OsStr::new("--authority"), OsStr::new(AUTHORITY)];
    let mut args = vec![OsStr::new("diff"), in_force.as_os_str(), proposal.as_os_str()];
    args.extend(keys);
    let o = run(&args);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("(revision 1) -> "), "{text}");
    assert!(text.contains("- GAINED: spiffe://acme.example/agents/* read crm.read"), "{text}");
    assert!(text.contains("- changed support-reads: agents"), "{text}");
    assert!(text.contains("- revoked tasks T-leaked"), "{text}");
    // JSON for tools, and --exit-code says the bundles differ.
    args.extend([OsStr::new("--format"), OsStr::new("json"), OsStr::new("--exit-code")]);
    let o = run(&args);
    assert_exit(&o, 1);
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(d["access"][0]["change"], "gained");
    assert_eq!(d["access"][0]["old_rules"], serde_json::json!([]));
    assert_eq!(d["revocations"][0], serde_json::json!({"kind": "tasks", "id": "T-leaked", "revoked": true}));
    // A bundle against itself: no differences, exit 0 even with --exit-code.
    let o = run([OsStr::new("diff"), proposal.as_os_str(), proposal.as_os_str(), OsStr::new("--exit-code")]);
    assert_exit(&o, 0);
    assert!(stdout(&o).ends_with("no differences\n"), "{}", stdout(&o));
    // A signed bundle without keys, and an invalid proposal, are refused with what to do.
    let o = run([OsStr::new("diff"), in_force.as_os_str(), proposal.as_os_str()]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("is a signed bundle: pass --keys"), "{}", stderr(&o));
    let mut broken = new.clone();
    broken["rules"][0]["tools"] = serde_json::json!(["crm.raed"]);
    let broken = s.write("broken.json", pretty(&broken));
    let o = run([OsStr::new("diff"), proposal.as_os_str(), broken.as_os_str()]);
    assert_exit(&o, 1);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(out.contains("broken.json") && out.contains("/rules/0/tools/0"), "{out}");
}
