//! Step-up through real Envoy at `--concurrency 2`: a refund needs an approval (403 step-up naming what it must
//! bind to); the real `warden approve` mints one from that reply; the retry with it goes through (the body reaches
//! the upstream whole); the same approval again is refused as `approval_replayed` however often and on whichever
//! worker VM it lands — single use is process-wide (shared data), not per VM.

use std::collections::BTreeSet;

use warden_host::HttpRequest;

use crate::governance::warden_approve_body;
use crate::support::envoy::{now, Gateway};
use crate::support::filter::{authed, bundle_at, claims, config, sign, token, BILLING, SUPPORT_BOT};

const REFUND: &str = r#"{"amount": 4200, "currency": "EUR", "order": "o-981"}"#;

fn refund(agent_token: &str, approval: Option<&str>) -> HttpRequest {
    let mut r =
        authed("POST", BILLING, "/v1/refunds", agent_token).header("content-type", "application/json").body(REFUND);
    if let Some(a) = approval {
        r = r.header("x-warden-approval", a);
    }
    r
}

#[test]
fn step_up_approve_retry_then_replay_is_refused_on_every_worker() {
    for hold in [false, true] {
        let g = Gateway::start(&config(Some(&sign(&bundle_at(now())))), hold, 2);
        let agent = token(&claims(SUPPORT_BOT, now()));
        let first = g.send(refund(&agent, None));
        assert_eq!(first.response.status, 403, "{first:#?}");
        assert_eq!(first.json()["reason"], "step_up_required", "{first:#?}");
        assert!(first.upstream.as_ref().is_none_or(|u| u.body.is_empty()), "no byte of the refund went upstream");

        let approval = warden_approve_body(&first.response.body, now(), REFUND.as_bytes(), &[]);
        let retry = g.send(refund(&agent, Some(&approval)));
        let up = retry.assert_forwarded();
        assert_eq!(up.body, REFUND.as_bytes(), "the approved call's body reaches the upstream whole");
        assert_eq!(up.header("x-warden-approval"), None, "the approval header is not forwarded");
        assert_eq!(retry.record()["reason"], "allowed_by_approval", "{}", retry.record());

        let mut vms = BTreeSet::new();
        for _ in 0..8 {
            let replay = g.send(refund(&agent, Some(&approval)));
            assert_eq!(replay.response.status, 403, "{replay:#?}");
            assert_eq!(replay.json()["reason"], "approval_replayed", "{replay:#?}");
            assert!(replay.upstream.as_ref().is_none_or(|u| u.body.is_empty()));
            vms.insert(replay.record()["vm"].as_str().unwrap_or("").to_string());
        }
        eprintln!("allow_on_headers_stop_iteration={hold}: replays refused on VMs {vms:?}");
        assert_eq!(g.envoy.warden_stat("warden.approvals.accepted"), 1);
    }
}
