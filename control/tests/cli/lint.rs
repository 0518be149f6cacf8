//! `warden lint`: every validation error at once, each as `FILE:LINE:COL: /pointer: message`; syntax errors too.

use crate::support::*;

const BAD: &str = r#"{
  "format": "warden.bundle/v1",
  "revision": 3,
  "issued_at": "2026-11-01T00:00:00Z",
  "expires_at": "2026-10-01T00:00:00Z",
  "owner": "sec@acme.example",
  "authority": "policy.acme.example",
  "tools": [
    {"id": "crm.read", "sensitivity": "read",
     "http": [{"host": "crm.acme.example", "methods": ["GET"], "path": "/c/{id}"}]},
    {"id": "crm.read", "sensitivity": "write"},
    {"id": "Bad Id", "sensitivity": "read"}
  ],
  "rules": [
    {"id": "r1", "effect": "allow", "tools": ["crm.nothing"]},
    {
      "id": "r2",
      "effect": "allow",
      "agents": ["spiffe://a/*/b"],
      "exception": {"approver": "ciso", "ticket": "SEC-1", "granted_at": "2026-11-01T00:00:00Z"}
    }
  ]
}
"#;

#[test]
fn reports_every_error_with_its_line_and_column() {
    let s = Scratch::new("lint");
    let path = s.write("bad.json", BAD);
    let o = warden(["lint".as_ref(), path.as_os_str()]);
    assert_exit(&o, 1);
    let f = path.display();
    assert_eq!(
        stdout(&o),
        format!(
            "{f}:5:17: /expires_at: must be later than issued_at\n\
             {f}:11:12: /tools/1/id: duplicate tool id \"crm.read\" (first defined at /tools/0)\n\
             {f}:12:12: /tools/2/id: invalid id \"Bad Id\": use lower-case letters, digits, \".\", \"_\" and \"-\", \
             starting with a letter or digit\n\
             {f}:15:47: /rules/0/tools/0: unknown tool \"crm.nothing\"\n\
             {f}:19:18: /rules/1/agents/0: invalid agent pattern \"spiffe://a/*/b\": use an exact id, a prefix \
             ending in \"/*\", or \"*\"\n\
             {f}:16:5: /rules/1/expires_at: missing: an exception must have expires_at\n\
             {f}: 6 errors\n"
        )
    );
}

#[test]
fn syntax_and_shape_errors_name_line_and_column() {
    let s = Scratch::new("lint-syntax");
    let path = s.write("broken.json", "{\n  \"format\": \"warden.bundle/v1\",\n  \"revision\": 3,,\n}\n");
    let o = warden(["lint".as_ref(), path.as_os_str()]);
    assert_exit(&o, 1);
    let f = path.display();
    assert_eq!(stdout(&o), format!("{f}:3:17: key must be a string\n{f}: 1 error\n"));

    let mut b = bundle(1);
    b["rules"][0]["effect"] = "permit".into();
    let path = s.write("shape.json", pretty(&b));
    let o = warden(["lint".as_ref(), path.as_os_str()]);
    assert_exit(&o, 1);
    let f = path.display();
    assert_eq!(
        stdout(&o),
        format!(
            "{f}:13:17: /rules/0/effect: \"permit\" is not one of \"allow\", \"deny\", \"step_up\"\n{f}: 1 error\n"
        )
    );
}

#[test]
fn a_valid_bundle_passes() {
    for example in ["coding-agent.json", "finance-agent.json", "support-agent.json"] {
        let path = root().join("policies/examples").join(example);
        let o = warden(["lint".as_ref(), path.as_os_str()]);
        assert_exit(&o, 0);
        assert!(stdout(&o).contains(": ok: revision "), "{}", stdout(&o));
    }
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let o = warden(["lint", "/nonexistent/bundle.json"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).starts_with("warden: error: cannot read /nonexistent/bundle.json: "), "{}", stderr(&o));
}
