//! `warden keygen`, `warden sign` and `warden verify`: file modes, refusals, and the verifier's exact messages.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;

use crate::support::*;
use warden_core::envelope::{sha256_hex, Algorithm};

fn args<'a>(list: &'a [&'a dyn AsRef<OsStr>]) -> Vec<&'a OsStr> {
    list.iter().map(|a| a.as_ref()).collect()
}

#[test]
fn keygen_writes_a_private_key_with_mode_0600_and_never_overwrites() {
    let s = Scratch::new("keygen");
    let private = s.path("k.jwk.json");
    let public = s.path("k.jwks.json");
    for alg in ["EdDSA", "ES256"] {
        let o = warden(args(&[
            &"keygen",
            &"--alg",
            &alg,
            &"--kid",
            &"k-1",
            &"--out",
            &private,
            &"--public",
            &public,
            &"--force",
        ]));
        assert_exit(&o, 0);
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
        let jwk: serde_json::Value = serde_json::from_slice(&std::fs::read(&private).unwrap()).unwrap();
        assert_eq!(jwk["alg"], alg);
        assert!(jwk["d"].is_string());
        let jwks: serde_json::Value = serde_json::from_slice(&std::fs::read(&public).unwrap()).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], "k-1");
        assert!(jwks["keys"][0].get("d").is_none(), "private material in the public key set");
    }

    // No --force: refused, the file untouched.
    let before = std::fs::read(&private).unwrap();
    let o = warden(args(&[&"keygen", &"--kid", &"k-2", &"--out", &private]));
    assert_exit(&o, 2);
    assert_eq!(
        stderr(&o),
        format!(
            "warden: error: {} already exists; refusing to overwrite it (use --force to replace it)\n",
            private.display()
        )
    );
    assert_eq!(std::fs::read(&private).unwrap(), before);

    // --force on a file that was world-readable: the new file still gets 0600.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = warden(args(&[&"keygen", &"--kid", &"k-3", &"--out", &private, &"--force"]));
    assert_exit(&o, 0);
    assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
    // Without --public the JWKS goes to stdout.
    let jwks: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], "k-3");

    let o = warden(["keygen", "--alg", "RS256", "--kid", "x", "--out", "/dev/null"]);
    assert_exit(&o, 2);
}

#[test]
fn sign_then_verify_round_trip() {
    let s = Scratch::new("sign");
    let (private, public, _) = s.key(Algorithm::ES256, "authority-es");
    let bundle_path = s.write("b.json", serde_json::to_string_pretty(&bundle(12)).unwrap());
    let jws = s.path("b.jws");
    let o = warden(args(&[&"sign", &bundle_path, &"--key", &private, &"--out", &jws]));
    assert_exit(&o, 0);

    let o = warden(args(&[
        &"verify",
        &jws,
        &"--keys",
        &public,
        &"--authority",
        &AUTHORITY,
        &"--now",
        &"2027-01-01T00:00:00Z",
    ]));
    assert_exit(&o, 0);
    let digest = sha256_hex(&std::fs::read(&bundle_path).unwrap());
    assert_eq!(
        stdout(&o),
        format!(
            "{}: verified\n  revision:   12\n  kid:        authority-es (ES256)\n  digest:     sha256:{digest}\n  \
             authority:  {AUTHORITY}\n  owner:      identity-security@acme.example\n  issued_at:  2026-11-01T00:00:00Z\n  \
             expires_at: 2099-01-01T00:00:00Z (in 26298d 0h, checked at 2027-01-01T00:00:00Z)\n",
            jws.display()
        )
    );

    // Anti-rollback as the gateway checks it.
    let o =
        warden(args(&[&"verify", &jws, &"--keys", &public, &"--authority", &AUTHORITY, &"--active-revision", &"12"]));
    assert_exit(&o, 1);
    assert_eq!(
        stderr(&o),
        format!("{}: refused: revision 12 is not higher than the active revision 12 (rollback)\n", jws.display())
    );
}

#[test]
fn sign_refuses_invalid_or_already_expired_bundles() {
    let s = Scratch::new("sign-refuse");
    let (private, _, _) = s.key(Algorithm::EdDSA, "a");
    let mut b = bundle(1);
    b["rules"][0]["tools"] = serde_json::json!(["nope"]);
    let bad = s.write("bad.json", serde_json::to_string_pretty(&b).unwrap());
    let out = s.path("bad.jws");
    let o = warden(args(&[&"sign", &bad, &"--key", &private, &"--out", &out]));
    assert_exit(&o, 1);
    assert!(stdout(&o).contains("/rules/0/tools/0: unknown tool \"nope\""), "{}", stdout(&o));
    assert!(stderr(&o).contains("refusing to sign"), "{}", stderr(&o));
    assert!(!out.exists());

    let expired = s.write("expired.json", serde_json::to_string_pretty(&bundle(1)).unwrap());
    let o = warden(args(&[&"sign", &expired, &"--key", &private, &"--out", &out, &"--now", &"2099-06-01T00:00:00Z"]));
    assert_exit(&o, 1);
    assert_eq!(
        stderr(&o),
        format!(
            "warden sign: refusing to sign {}: gateways would refuse it: signed bundle: expired at \
             2099-01-01T00:00:00Z (gateway clock 2099-06-01T00:00:00Z)\n",
            expired.display()
        )
    );
    assert!(!out.exists());
}

#[test]
fn verify_refusals_say_why() {
    let s = Scratch::new("verify");
    let (_, public, key) = s.key(Algorithm::EdDSA, "authority-1");
    let (_, _, other_same_kid) = {
        let other = Scratch::new("verify-other");
        let k = other.key(Algorithm::EdDSA, "authority-1");
        (k.0.clone(), k.1.clone(), k.2)
    };
    let (_, _, stranger) = s.key(Algorithm::EdDSA, "stranger");
    let good = sign(&bundle(3), &key);

    let check = |file: &str, contents: &str, extra: &[&str], want: &str| {
        let path = s.write(file, contents);
        let mut a: Vec<&OsStr> = vec!["verify".as_ref(), path.as_os_str(), "--keys".as_ref(), public.as_os_str()];
        if !extra.contains(&"--authority") {
            a.extend(["--authority", AUTHORITY].iter().map(|x| OsStr::new(*x)));
        }
        a.extend(["--now", "2027-01-01T00:00:00Z"].iter().map(|x| OsStr::new(*x)));
        a.extend(extra.iter().map(|x| OsStr::new(*x)));
        let o = warden(a);
        assert_exit(&o, 1);
        assert_eq!(stderr(&o), format!("{}: refused: {want}\n", path.display()), "case {file}");
    };

    check(
        "stranger.jws",
        &sign(&bundle(3), &stranger),
        &[],
        "signed bundle: kid \"stranger\" is not one of the pinned authority keys",
    );
    check(
        "wrong-key.jws",
        &sign(&bundle(3), &other_same_kid),
        &[],
        "signed bundle: signature does not verify with the pinned key \"authority-1\"",
    );
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = sign(&bundle(300), &stranger);
    let tampered = format!("{}.{}.{}", parts[0], forged_payload.split('.').nth(1).unwrap(), parts[2]);
    check(
        "tampered.jws",
        &tampered,
        &[],
        "signed bundle: signature does not verify with the pinned key \"authority-1\"",
    );
    let mut short = bundle(3);
    short["expires_at"] = "2026-12-01T00:00:00Z".into();
    check(
        "expired.jws",
        &sign(&short, &key),
        &[],
        "signed bundle: expired at 2026-12-01T00:00:00Z (gateway clock 2027-01-01T00:00:00Z)",
    );
    check(
        "authority.jws",
        &good,
        &["--authority", "someone.else"],
        "signed bundle: /authority is \"policy.acme.example\", but this gateway trusts bundles from \"someone.else\"",
    );
    check(
        "revoked.jws",
        &good,
        &["--revoked-kid", "authority-1"],
        "signed bundle: signing key \"authority-1\" has been revoked",
    );
    check(
        "garbage.jws",
        "not a jws",
        &[],
        "signed bundle: not a JWS compact serialization: expected 3 dot-separated segments, found 1",
    );

    // Verifies, but does not validate: the errors are located in the payload.
    let mut invalid = bundle(3);
    invalid["rules"][0]["tools"] = serde_json::json!(["nope"]);
    let path = s.write("invalid.jws", sign(&invalid, &key));
    let o = warden(args(&[&"verify", &path, &"--keys", &public, &"--authority", &AUTHORITY]));
    assert_exit(&o, 1);
    // Where `"nope"` lands in the signed text depends on serde_json's key order (sorted, or insertion order when
    // another crate in the build enables `preserve_order`), so the expected line is read off the same text.
    let text = serde_json::to_string_pretty(&invalid).unwrap();
    let line = text.lines().position(|l| l.contains("\"nope\"")).unwrap() + 1;
    let col = text.lines().nth(line - 1).unwrap().find('"').unwrap() + 1;
    assert_eq!(
        stderr(&o),
        format!(
            "{p}#payload:{line}:{col}: /rules/0/tools/0: unknown tool \"nope\"\n\
             {p}: refused: the signature verifies but the bundle does not validate\n",
            p = path.display()
        )
    );
}
