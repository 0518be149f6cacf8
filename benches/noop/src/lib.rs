//! The wasm floor of the Envoy benchmark (`benches/envoy/`): a proxy-wasm filter that reads two request headers
//! (`:path` and `authorization`, as bytes, two host calls) and lets the request continue.
//!
//! What a request costs in Envoy's V8 with this module is what any proxy-wasm filter pays before it does any work
//! of its own: the VM's context creation and teardown, the callbacks, two header lookups. `warden.wasm`'s cost is
//! compared with it (issue 17). Nothing here is part of the filter.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Read and dropped: the lookups are the work being measured.
        let path = self.get_http_request_header_bytes(":path");
        let token = self.get_http_request_header_bytes("authorization");
        std::hint::black_box((path, token));
        Action::Continue
    }
}
