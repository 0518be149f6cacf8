//! The rule index of a compiled bundle: agent patterns interned into classes, and per-class candidate rule lists.
//!
//! Every distinct agent pattern of the bundle becomes a *class*: class 0 is `*`, then one class per exact id and one
//! per `prefix/*`. For an agent id, the matching classes are found with one hash lookup for the exact id plus one
//! per `/` boundary whose prefix length some pattern uses (usually one or two), never by scanning rules. Each tool
//! (and the bundle-wide list of rules that select every tool) maps a class to its candidate rules, sorted by
//! precedence: effect first (deny, step-up, allow), then position in the bundle.

use crate::fxhash::FxHashMap;

/// The class of the `*` agent pattern.
pub(crate) const ANY_AGENT: u32 = 0;

/// Agent patterns interned into classes.
#[derive(Debug, Default)]
pub(crate) struct AgentClasses {
    exact: FxHashMap<Box<str>, u32>,
    /// Keyed by the prefix including its trailing `/`.
    prefix: FxHashMap<Box<str>, u32>,
    /// Distinct prefix lengths (bytes, including the `/`), ascending.
    prefix_lens: Vec<usize>,
    next: u32,
}

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

impl AgentClasses {
    pub(crate) fn new() -> Self {
        AgentClasses { next: ANY_AGENT + 1, ..AgentClasses::default() }
    }

    /// The class of a pattern, interning it on first use.
    pub(crate) fn intern(&mut self, pattern: AgentPattern<'_>) -> u32 {
        let (map, key) = match pattern {
            AgentPattern::Any => return ANY_AGENT,
            AgentPattern::Exact(id) => (&mut self.exact, id),
            AgentPattern::Prefix(p) => {
                if let Err(pos) = self.prefix_lens.binary_search(&p.len()) {
                    self.prefix_lens.insert(pos, p.len());
                }
                (&mut self.prefix, p)
            }
        };
        if let Some(class) = map.get(key) {
            return *class;
        }
        let class = self.next;
        self.next += 1;
        map.insert(key.into(), class);
        class
    }

    /// Calls `f` with every class whose pattern matches `agent_id` (always including [`ANY_AGENT`]).
    #[inline]
    pub(crate) fn for_each_match(&self, agent_id: &str, mut f: impl FnMut(u32)) {
        f(ANY_AGENT);
        if !self.exact.is_empty() {
            if let Some(class) = self.exact.get(agent_id) {
                f(*class);
            }
        }
        let bytes = agent_id.as_bytes();
        for &len in &self.prefix_lens {
            // A prefix matches at a segment boundary and leaves at least one more byte.
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

/// Candidate rules per agent class, each list sorted by precedence key.
#[derive(Debug, Default)]
pub(crate) struct ClassIndex {
    /// Sorted by class.
    entries: Vec<(u32, Box<[u32]>)>,
}

impl ClassIndex {
    /// Builds the index from (class, rule) pairs; `key` gives each rule's precedence key.
    pub(crate) fn build(mut pairs: Vec<(u32, u32)>, key: impl Fn(u32) -> u64) -> ClassIndex {
        pairs.sort_unstable_by_key(|&(class, rule)| (class, key(rule)));
        pairs.dedup();
        let mut entries: Vec<(u32, Box<[u32]>)> = Vec::new();
        let mut i = 0;
        while i < pairs.len() {
            let class = pairs[i].0;
            let mut j = i;
            while j < pairs.len() && pairs[j].0 == class {
                j += 1;
            }
            entries.push((class, pairs[i..j].iter().map(|&(_, r)| r).collect()));
            i = j;
        }
        ClassIndex { entries }
    }

    #[inline]
    pub(crate) fn get(&self, class: u32) -> &[u32] {
        match self.entries.binary_search_by_key(&class, |(c, _)| *c) {
            Ok(i) => self.entries.get(i).map(|(_, rules)| &rules[..]).unwrap_or(&[]),
            Err(_) => &[],
        }
    }
}
