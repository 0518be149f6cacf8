//! What the gate asks of its host after each event: the [`Step`] (edit the request headers now, write the decision
//! record now, then [`Next`]), and the edits themselves.

use crate::facts::Identity;
use crate::gate::reply::LocalReply;
use crate::gate::store::Claim;
use crate::token_cache::TokenCache;

/// The host's part after an event of the request.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Step {
    /// Apply [`crate::gate::Flow::for_each_header_edit`] now. Only ever set while the request headers can still be
    /// changed (the header phase, before the headers went on).
    pub edit_headers: bool,
    /// Write the decision record now ([`crate::gate::Flow::record`]) and bump [`crate::gate::Flow::counters`]:
    /// exactly once per request.
    pub record: bool,
    pub next: Next,
}

/// What the host does after the edits and the record.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Let the request (its headers, or its body) go on.
    Continue,
    /// Hold: the headers stay paused, or the body chunk is buffered; wait for the next event.
    Pause,
    /// Answer with this local reply; nothing reaches the upstream.
    Reply(LocalReply),
    /// Read the whole buffered request body and call [`crate::gate::Flow::on_request_body_bytes`].
    ReadBody,
    /// Carry out this claim against shared data ([`crate::gate::run_claim`]) and call
    /// [`crate::gate::Flow::on_claimed`] with the outcome.
    Claim(Claim),
}

impl Step {
    pub(crate) fn wait(next: Next) -> Step {
        Step { edit_headers: false, record: false, next }
    }
}

/// One change to the request headers before they go upstream, in the order given: the reserved headers removed,
/// `:path` replaced by the normalized path, the verified identity added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Remove every value of this header.
    Remove(&'a str),
    /// Replace `:path` (what was matched is what is forwarded).
    Path(&'a str),
    /// Add this header.
    Add(&'static str, &'a str),
}

/// Edits of the response headers (a `tools/list` answer that is rewritten): set, or remove with `None`.
pub type ResponseEdits = Vec<(&'static str, Option<&'static str>)>;

/// What the host does with a response body chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseNext {
    /// Pass it on.
    Continue,
    /// Buffer it.
    Pause,
    /// Read the whole buffered body, call [`crate::gate::Flow::on_response_body_bytes`], and replace the body with
    /// what it returns.
    ReadBody,
}

/// Where the caller's identity comes from.
// One per request, moved into the flow: boxing the identity would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Credentials<'c> {
    /// Verify the request's token headers, through this VM's token cache when given (hits skip the signature).
    Tokens(Option<&'c mut TokenCache>),
    /// Take this identity as established (policy tests that state the agent's facts instead of its tokens); the
    /// token headers are not read.
    Given(Identity),
}
