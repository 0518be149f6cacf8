//! MCP (Model Context Protocol, Streamable HTTP): strict parsing of a JSON-RPC 2.0 POST body, the MCP servers of the
//! catalog, and what a message reaches.
//!
//! # Parsing ([`parse_body`])
//!
//! A gateway that parses a body differently from the server behind it can be walked around, so the parser refuses
//! everything a lenient server might read another way. Refused, each with a stable [`McpError::code`]:
//! - bytes that are not UTF-8 (`mcp_not_utf8`), text that is not one JSON value (`mcp_not_json`; includes truncated
//!   bodies, trailing data, lone surrogates, nesting beyond 128), a member name used twice in any object, at any
//!   depth, after unescaping (`mcp_duplicate_key`; `serde_json` alone would keep the last one);
//! - an array (a batch) unless the server allows batches (`mcp_batch_refused`), an empty batch (`mcp_empty_batch`);
//! - a message that is not an object, has members other than `jsonrpc`, `id`, `method`, `params`, `result`,
//!   `error`, or lacks `"jsonrpc": "2.0"` exactly (`mcp_invalid_message`);
//! - an `id` that is not a string or an integer (`null` included) (`mcp_invalid_id`);
//! - a method that is empty, has characters outside visible ASCII, or differs only in letter case from a method of
//!   MCP (`Tools/Call`) (`mcp_invalid_method`);
//! - `params` that are not an object, or do not have the shape of the method (`mcp_invalid_params`): `tools/call`
//!   needs an `id` and `params` `{name: string, arguments?: object, _meta?: object, task?: object}`;
//!   `resources/read` needs an `id` and `{uri: string, _meta?: object}` where the URI has no `.`/`..` segments, no
//!   `\`, no whitespace or control characters and no percent-encoded `.`, `/` or `\`; `prompts/get` needs an `id`
//!   and `{name: string, arguments?: {string: string}, _meta?: object}`; a `notifications/…` method must not have
//!   an `id`. Unknown members of these three methods' `params` are refused.
//!
//! A message with `result` or `error` (and no `method`) is the client's answer to a request of the server; it
//! needs an `id`.
//!
//! # Resolution
//!
//! [`CompiledBundle::resolve_mcp_server`] says whether a request goes to an MCP server of the catalog (host, then
//! the longest path prefix, as HTTP routes are resolved). [`CompiledBundle::resolve_mcp`] maps a message to an
//! [`McpTarget`]: `tools/call` by `params.name`, `resources/read` by `params.uri` (an exact URI first, then the
//! pattern with the longest literal prefix, then the earliest), `prompts/get` by `params.name`, any other method by
//! its name; unbound methods of the protocol's own life cycle ([`LIFECYCLE_METHODS`], and client answers) get the
//! server's `lifecycle` effect; everything else is an unknown tool (`defaults.unknown_tool`).

pub mod index;
pub mod list;
pub mod parse;

pub use crate::vocab::McpServerIdx;
pub use index::{McpTarget, LIFECYCLE_METHODS};
pub use list::Visibility;
pub use parse::{parse_body, parse_strict, McpBody, McpError, McpErrorKind, McpKind, McpMessage};
