//! Questions about a compiled bundle for offline tools (`warden report`): which tools a rule selects and which
//! rules apply to an agent pattern, answered with the same candidate index and selector checks `decide` uses.

use crate::index::Candidates;
use crate::vocab::ToolIdx;

use super::CompiledBundle;

impl CompiledBundle {
    /// The tools each rule selects, by rule position (bundle order): its `tools` expanded against the catalog and
    /// narrowed by its `sensitivities`, read back from the candidate index. Shadow rules included.
    pub fn tools_of_rules(&self) -> Vec<Vec<ToolIdx>> {
        let mut out: Vec<Vec<ToolIdx>> = vec![Vec::new(); self.rules.len()];
        let mut every_tool = vec![false; self.rules.len()];
        for index in std::iter::once(&self.candidates).chain(self.shadow_candidates.as_ref()) {
            for (scope, _, list) in index.lists() {
                for &r in list {
                    match Candidates::scope_tool(scope) {
                        None => {
                            if let Some(e) = every_tool.get_mut(r as usize) {
                                *e = true;
                            }
                        }
                        Some(t) => {
                            if let Some(tools) = out.get_mut(r as usize) {
                                tools.push(ToolIdx(t));
                            }
                        }
                    }
                }
            }
        }
        for (r, tools) in out.iter_mut().enumerate() {
            if every_tool.get(r).copied().unwrap_or(false) {
                *tools = (0..self.tools.len() as u32).map(ToolIdx).collect();
            }
            let mask = self.rules.get(r).map_or(0, |rule| rule.sensitivities);
            tools.retain(|t| self.tools.get(t.0 as usize).is_some_and(|tool| mask & tool.sensitivity.bit() != 0));
            tools.sort_unstable_by_key(|t| t.0);
            tools.dedup();
        }
        out
    }

    /// The rules that apply to `tool` for every agent `pattern` matches (an exact id, a `prefix/*` or `*`), shadow
    /// rules included, in precedence order (deny, step-up, allow, then bundle order), as positions in the bundle.
    /// Selectors other than agent, tool and sensitivity (environment, task, time, conditions) are not applied.
    /// This is `decide`'s candidate walk with the pattern standing for its agents: a `prefix/*` pattern reaches the
    /// rules of `*` and of every prefix it lies under; `*` only those of `*`.
    pub fn rules_for_agents(&self, tool: ToolIdx, pattern: &str) -> Vec<usize> {
        let Some(tool_entry) = self.tools.get(tool.0 as usize) else { return Vec::new() };
        let bit = tool_entry.sensitivity.bit();
        let exact = if pattern.contains('*') { None } else { self.agents.exact(pattern).class };
        let mut found: Vec<u32> = Vec::new();
        for index in std::iter::once(&self.candidates).chain(self.shadow_candidates.as_ref()) {
            let collect = |list: &[u32]| found.extend_from_slice(list);
            index.for_each_list(&self.agents, tool.0, exact, pattern, collect);
        }
        found.sort_unstable();
        found.dedup();
        let mut rules: Vec<(u64, usize)> = found
            .into_iter()
            .filter_map(|r| {
                let rule = self.rules.get(r as usize)?;
                (rule.sensitivities & bit != 0).then_some((rule.effect.rank(), r as usize))
            })
            .collect();
        rules.sort_unstable();
        rules.into_iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::bundle::Bundle;
    use crate::compile::compile;
    use crate::vocab::ToolIdx;

    #[test]
    fn agent_patterns_reach_the_rules_that_cover_them_and_rules_their_tools() {
        let b: Bundle = serde_json::from_value(serde_json::json!({
            "format": "warden.bundle/v1", "revision": 1,
            "issued_at": "2026-11-01T00:00:00Z", "expires_at": "2027-11-01T00:00:00Z",
            "owner": "sec", "authority": "policy.example",
            "tools": [{"id": "crm.read", "sensitivity": "read"}, {"id": "crm.write", "sensitivity": "write"},
                      {"id": "pay.refund", "sensitivity": "payment"}],
            "rules": [
                {"id": "a-prefix", "effect": "allow", "agents": ["spiffe://a/*"], "tools": ["crm.*"]},
                {"id": "ab-prefix", "effect": "deny", "agents": ["spiffe://a/b/*"], "sensitivities": ["write"]},
                {"id": "ab-exact", "effect": "allow", "agents": ["spiffe://a/b"]},
                {"id": "anyone", "effect": "step_up", "tools": ["pay.refund"], "shadow": true,
                 "step_up": {"approvers": ["fin"]}}
            ],
            "approvers": [{"id": "fin", "iss": "https://approvals.example", "algorithms": ["EdDSA"],
                           "max_approval_age_seconds": 300,
                           "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "a1",
                                              "x": "mJJ3AQtTHziLV5zcv6xZ3w-RcEFeArJaETx2QGOuDQU"}]}}]
        }))
        .unwrap();
        let c = compile(&b).unwrap();
        let ids = |tool: u32, pattern: &str| -> Vec<&str> {
            c.rules_for_agents(ToolIdx(tool), pattern).into_iter().map(|r| &*c.rules[r].id).collect()
        };
        // A prefix covers the longer prefixes and the ids below it, not the reverse, and `*` only `*`.
        assert_eq!(ids(0, "spiffe://a/b/*"), ["a-prefix"]);
        assert_eq!(ids(1, "spiffe://a/b/*"), ["ab-prefix", "a-prefix"]);
        assert_eq!(ids(0, "spiffe://a/b"), ["a-prefix", "ab-exact"]);
        assert_eq!(ids(0, "spiffe://a/*"), ["a-prefix"]);
        assert_eq!(ids(1, "spiffe://a/*"), ["a-prefix"]);
        assert!(ids(0, "*").is_empty());
        assert_eq!(ids(2, "*"), ["anyone"]);
        assert_eq!(ids(2, "spiffe://a/b"), ["anyone", "ab-exact"]);
        let tools: Vec<Vec<u32>> =
            c.tools_of_rules().into_iter().map(|t| t.into_iter().map(|t| t.0).collect()).collect();
        assert_eq!(tools, vec![vec![0, 1], vec![1], vec![0, 1, 2], vec![2]]);
    }
}
