//! The gate: the request pipeline as one sans-IO state machine, shared by the filter, `warden eval`, `warden test`
//! and replay, so that they cannot disagree.
//!
//! The host scans the request headers once ([`RequestView::scan`]), starts a [`Flow`] with
//! [`Flow::on_request_headers`] and carries out each [`Step`] it gets back: apply the header edits
//! ([`Flow::for_each_header_edit`]), write the decision record ([`Flow::record`], [`record::build`]) and bump
//! [`Flow::counters`], then [`Next`]: continue, pause, send the [`LocalReply`], read the body and call
//! [`Flow::on_request_body_bytes`], or run a [`Claim`] against shared data ([`run_claim`]) and call
//! [`Flow::on_claimed`]. Later events go to [`Flow::on_request_body`], [`Flow::on_request_trailers`] and, for an
//! allowed `tools/list`, [`Flow::on_response_headers`] / [`Flow::on_response_body`]. Nothing here reads a clock or
//! calls the host: times come in with the events.
//!
//! [`driver::run`] runs a whole request (a recorded one: [`driver::Exchange::from_recorded`]) through these same
//! steps with a [`MemoryStore`]: `warden eval`, `warden test` and the equivalence test decide with it.

pub mod driver;
pub mod flow;
pub mod outcome;
pub mod record;
pub mod reply;
pub mod step;
pub mod store;
pub mod view;

pub use crate::pins::PinMemory;
pub use flow::{Flow, Request};
pub use outcome::{Counters, Governance, McpRecord, StepUpInfo};
pub use reply::LocalReply;
pub use step::{Credentials, Edit, Next, ResponseEdits, ResponseNext, Step};
pub use store::{run_claim, Claim, ClaimOutcome, MemoryStore, SharedStore, StoreError};
pub use view::{Field, Presented, RequestView, TokenHeader};
