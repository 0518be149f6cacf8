//! The rule index of a compiled bundle: agent patterns interned into classes, and candidate rule lists per
//! (tool, agent class).
//!
//! Every distinct agent pattern of the bundle becomes a *class*: class 0 is `*`, then one class per exact id and one
//! per `prefix/*`. For an agent id, the matching classes are found with one hash lookup of the exact id (the same
//! lookup tells whether the agent is revoked) plus one per `/` boundary whose prefix length some pattern uses
//! (usually one or two), never by scanning rules. Candidate lists are keyed by (scope, class), where the scope is a
//! tool or "every tool"; each list is sorted by precedence: effect first (deny, step-up, allow), then position in
//! the bundle.

use crate::fxhash::FxHashMap;

/// The class of the `*` agent pattern.
pub(crate) const ANY_AGENT: u32 = 0;

/// The scope of rules that select every tool.
pub(crate) const ALL_TOOLS: u32 = 0;

/// A parsed agent pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentPattern<'a> {
    Any,
    Exact(&'a str),
    /// The prefix including its trailing `/`.
    Prefix(&'a str),
}

/// Parses an agent pattern: `*`, `prefix/*` (non-empty prefix) or an exact id without `*` or whitespace.
pub(crate) fn parse_agent_pattern(raw: &str) -> Option<AgentPattern<'_>> {
    if raw == "*" {
        return Some(AgentPattern::Any);
    }
    if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    match raw.strip_suffix('*') {
        Some(prefix) if prefix.len() > 1 && prefix.ends_with('/') && !prefix.contains('*') => {
            Some(AgentPattern::Prefix(prefix))
        }
        Some(_) => None,
        None if raw.contains('*') => None,
        None => Some(AgentPattern::Exact(raw)),
    }
}

/// What the bundle says about one exact agent id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ExactAgent {
    /// Listed in `revocations.agents`.
    pub(crate) revoked: bool,
    /// The class of rules that name this id exactly.
    pub(crate) class: Option<u32>,
}

/// Agent patterns interned into classes, and the revoked agent ids.
#[derive(Debug, Default)]
pub(crate) struct AgentIndex {
    exact: FxHashMap<Box<str>, ExactAgent>,
    /// Keyed by the prefix including its trailing `/`.
    prefix: FxHashMap<Box<str>, u32>,
    /// Distinct prefix lengths (bytes, including the `/`), ascending.
    prefix_lens: Vec<usize>,
    next: u32,
}

impl AgentIndex {
    pub(crate) fn new() -> Self {
        AgentIndex { next: ANY_AGENT + 1, ..AgentIndex::default() }
    }

    /// The class of a pattern, interning it on first use.
    pub(crate) fn intern(&mut self, pattern: AgentPattern<'_>) -> u32 {
        let next = self.next;
        let class = match pattern {
            AgentPattern::Any => return ANY_AGENT,
            AgentPattern::Exact(id) => *self.exact.entry(id.into()).or_default().class.get_or_insert(next),
            AgentPattern::Prefix(p) => {
                if let Err(pos) = self.prefix_lens.binary_search(&p.len()) {
                    self.prefix_lens.insert(pos, p.len());
                }
                *self.prefix.entry(p.into()).or_insert(next)
            }
        };
        if class == next {
            self.next += 1;
        }
        class
    }

    /// Marks an exact agent id as revoked.
    pub(crate) fn revoke(&mut self, id: &str) {
        self.exact.entry(id.into()).or_default().revoked = true;
    }

    /// The entry of an exact agent id (one hash lookup).
    #[inline]
    pub(crate) fn exact(&self, agent_id: &str) -> ExactAgent {
        if self.exact.is_empty() {
            return ExactAgent::default();
        }
        self.exact.get(agent_id).copied().unwrap_or_default()
    }

    /// Calls `f` with the class of every `prefix/*` pattern that matches `agent_id`: the prefix ends at a `/` of
    /// the id and leaves at least one more byte.
    #[inline]
    pub(crate) fn for_each_prefix_class(&self, agent_id: &str, mut f: impl FnMut(u32)) {
        let bytes = agent_id.as_bytes();
        for &len in &self.prefix_lens {
            if len >= bytes.len() {
                break;
            }
            if bytes.get(len.wrapping_sub(1)) != Some(&b'/') {
                continue;
            }
            if let Some(class) = agent_id.get(..len).and_then(|p| self.prefix.get(p)) {
                f(*class);
            }
        }
    }
}

/// Candidate rules per (scope, agent class), each list sorted by precedence key.
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    lists: FxHashMap<u64, Box<[u32]>>,
    /// Whether any rule selects every tool (saves a lookup per class when none does).
    has_all_tools: bool,
}

fn key(scope: u32, class: u32) -> u64 {
    (u64::from(scope) << 32) | u64::from(class)
}

impl Candidates {
    /// Builds the lists from (scope, class, rule) triples; `precedence` gives each rule's sort key.
    pub(crate) fn build(triples: Vec<(u32, u32, u32)>, precedence: impl Fn(u32) -> u64) -> Candidates {
        // Each rule's precedence is computed once, not per comparison; the sort key is (scope, class, precedence),
        // one u128.
        let mut keyed: Vec<(u128, u32)> = triples
            .into_iter()
            .map(|(scope, class, rule)| ((u128::from(key(scope, class)) << 64) | u128::from(precedence(rule)), rule))
            .collect();
        keyed.sort_unstable();
        keyed.dedup();
        let has_all_tools = keyed.iter().any(|&(k, _)| (k >> 96) as u32 == ALL_TOOLS);
        let mut lists = FxHashMap::default();
        for group in keyed.chunk_by(|a, b| (a.0 >> 64) == (b.0 >> 64)) {
            if let Some(&(k, _)) = group.first() {
                lists.insert((k >> 64) as u64, group.iter().map(|&(_, r)| r).collect());
            }
        }
        Candidates { lists, has_all_tools }
    }

    /// The scope of a tool index.
    pub(crate) fn tool_scope(tool: u32) -> u32 {
        tool.wrapping_add(1)
    }

    /// The tool index of a scope; `None` for [`ALL_TOOLS`].
    pub(crate) fn scope_tool(scope: u32) -> Option<u32> {
        scope.checked_sub(1)
    }

    #[inline]
    pub(crate) fn get(&self, scope: u32, class: u32) -> &[u32] {
        self.lists.get(&key(scope, class)).map(|l| &l[..]).unwrap_or(&[])
    }

    /// Every list with its (scope, class), in no particular order (for offline queries).
    pub(crate) fn lists(&self) -> impl Iterator<Item = (u32, u32, &[u32])> + '_ {
        self.lists.iter().map(|(&k, l)| ((k >> 32) as u32, k as u32, &l[..]))
    }

    #[inline]
    pub(crate) fn has_all_tools(&self) -> bool {
        self.has_all_tools
    }

    /// Calls `f` with every list of these candidates for a tool and an agent: the lists of the `*` class, of the
    /// agent's exact id (`exact_class`, from the same lookup that checks revocation) and of each matching
    /// `prefix/*`, each for the tool and for "every tool".
    #[inline]
    pub(crate) fn for_each_list<'c>(
        &'c self,
        agents: &AgentIndex,
        tool: u32,
        exact_class: Option<u32>,
        agent_id: &str,
        mut f: impl FnMut(&'c [u32]),
    ) {
        let scope = Candidates::tool_scope(tool);
        let all_tools = self.has_all_tools();
        let mut visit = |class: u32| {
            f(self.get(scope, class));
            if all_tools {
                f(self.get(ALL_TOOLS, class));
            }
        };
        visit(ANY_AGENT);
        if let Some(class) = exact_class {
            visit(class);
        }
        agents.for_each_prefix_class(agent_id, visit);
    }
}
