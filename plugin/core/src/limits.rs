//! Limits and budgets on allowed calls: the compiled form of the bundle's `limits`, what one call charges to them
//! ([`Charge`]: which counter, how much, until when), and the process-wide counter record as pure functions
//! ([`claim`]), which the gate carries out by compare-and-swap on shared data ([`crate::gate::Claim::Limits`]).
//!
//! Every limit counts in fixed windows of `window_seconds` aligned on the epoch (a window ends at the next multiple
//! of its length), per key: the limit's id and the values of its `per` facts (agent, tool, task, environment). A
//! rate limit adds 1 per call, a budget the call's argument in millionths ([`UNITS`]), so sums are exact. All the
//! counters of one proxy process live in one shared-data record ([`LIMITS_KEY`]) so that the charges of one call
//! (several limits, or the calls of a batch) are accepted or refused together by one compare-and-swap: a refused call
//! consumes nothing. Entries of ended windows are dropped on every write; a record that would hold more than
//! [`MAX_ENTRIES`] live counters refuses the call (fail closed) instead of growing without bound.
//!
//! No clock is read here: `now` comes with every call.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::bundle::LimitKey;

/// Shared-data key of the counter record (per Envoy `vm_id`, like every shared-data key).
pub const LIMITS_KEY: &str = "warden.limits";

/// Most live counters (limit × key × window) one proxy process keeps; a call that needs another is refused
/// (`limit_store_unavailable`) until windows end.
pub const MAX_ENTRIES: usize = 4096;

/// Longest window: 31 days.
pub const MAX_WINDOW_SECONDS: u64 = 2_678_400;

/// A budget counts its argument in millionths: amounts and maxima have at most 6 decimal places.
pub const UNITS: u64 = 1_000_000;

/// Largest amount or budget maximum (in whole units): 9 000 000 000, so every millionth is exact in an `f64`.
pub const MAX_AMOUNT: f64 = 9e9;

/// A compiled limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub id: Box<str>,
    /// What calls are counted apart by, in the authored order.
    pub per: Box<[LimitKey]>,
    /// Window length in seconds (1 to [`MAX_WINDOW_SECONDS`]).
    pub window: i64,
    pub kind: Kind,
    pub owner: Option<Box<str>>,
}

/// A rate limit or a budget.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// At most `max` calls per key and window.
    Calls { max: u64 },
    /// At most `max` (in [`UNITS`]) of the argument at `pointer`, summed per key and window.
    Budget { argument: Box<str>, pointer: Box<[Box<str>]>, max: u64 },
}

impl Kind {
    /// `calls` or `budget`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Calls { .. } => "calls",
            Kind::Budget { .. } => "budget",
        }
    }

    /// The maximum in the counter's units (calls, or millionths).
    pub fn max(&self) -> u64 {
        match self {
            Kind::Calls { max } | Kind::Budget { max, .. } => *max,
        }
    }
}

/// The bundle's limits, indexed by tool.
#[derive(Debug, Default)]
pub struct Limits {
    list: Vec<Limit>,
    /// Tool index → the indexes of the limits that count its calls.
    by_tool: Vec<Box<[u32]>>,
}

impl Limits {
    /// `by_tool[t]` lists the limits of tool `t` (indexes into `list`).
    pub fn new(list: Vec<Limit>, by_tool: Vec<Box<[u32]>>) -> Limits {
        Limits { list, by_tool }
    }

    /// The limits in bundle order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Limit> + '_ {
        self.list.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get(&self, index: u32) -> Option<&Limit> {
        self.list.get(index as usize)
    }

    /// The limits that count the calls of tool `tool` (an index into the catalog).
    pub fn of_tool(&self, tool: u32) -> impl Iterator<Item = (u32, &Limit)> + '_ {
        let picked = self.by_tool.get(tool as usize).map(|b| &b[..]).unwrap_or_default();
        picked.iter().filter_map(|&i| self.list.get(i as usize).map(|l| (i, l)))
    }

    /// The ids of the tools a limit counts, by catalog index.
    pub fn tools_of(&self, index: u32) -> impl Iterator<Item = u32> + '_ {
        self.by_tool.iter().enumerate().filter(move |(_, l)| l.contains(&index)).map(|(t, _)| t as u32)
    }
}

/// The facts a call's key is made of.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub agent: &'a str,
    pub task: Option<&'a str>,
    pub tool: &'a str,
    pub environment: &'a str,
}

impl Caller<'_> {
    /// The value of one `per` fact (`""` for a call without a task).
    pub fn part(&self, k: LimitKey) -> &str {
        match k {
            LimitKey::Agent => self.agent,
            LimitKey::Tool => self.tool,
            LimitKey::Task => self.task.unwrap_or(""),
            LimitKey::Environment => self.environment,
        }
    }
}

/// What one call charges to one limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The limit's index in [`Limits`].
    pub limit: u32,
    /// The catalog index of the tool called.
    pub tool: u32,
    /// The counter's id: 128 bits of SHA-256 over the limit id and the key, as hex.
    pub entry: String,
    /// 1 for a call, the argument in millionths for a budget.
    pub amount: u64,
    /// The limit's maximum, in the same units.
    pub max: u64,
    /// When the window ends (seconds since the epoch): the counter resets then.
    pub window_end: i64,
}

/// A budget's argument that is missing, not a number, negative, over [`MAX_AMOUNT`] or has more than 6 decimal
/// places: the call is refused (its arguments cannot be counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAmount {
    pub limit: u32,
}

/// The end of the window that holds `now`: the next multiple of `window` after it.
pub fn window_end(now: i64, window: i64) -> i64 {
    let window = window.max(1);
    now.div_euclid(window).saturating_mul(window).saturating_add(window)
}

/// The counter id of a limit for a caller: over the limit's id and kind and its `per` facts, length-prefixed, so no
/// two keys spell the same text.
pub fn entry_id(limit: &Limit, caller: &Caller<'_>) -> String {
    let mut h = Sha256::new();
    let mut part = |s: &str| {
        h.update(format!("{}:", s.len()).as_bytes());
        h.update(s.as_bytes());
    };
    part(&limit.id);
    // The kind too: a limit turned from calls into a budget (same id) does not read calls as millionths.
    part(limit.kind.as_str());
    for k in limit.per.iter() {
        part(k.as_str());
        part(caller.part(*k));
    }
    let digest = h.finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// What a call charges to limit `index`: 1, or for a budget its argument (from `arguments`, the call's `arguments`).
pub fn charge(
    index: u32,
    limit: &Limit,
    tool: u32,
    caller: &Caller<'_>,
    arguments: Option<&Value>,
    now: i64,
) -> Result<Charge, BadAmount> {
    let amount = match &limit.kind {
        Kind::Calls { .. } => 1,
        Kind::Budget { pointer, .. } => arguments
            .and_then(|a| crate::args::lookup(a, pointer))
            .and_then(amount_units)
            .ok_or(BadAmount { limit: index })?,
    };
    Ok(Charge {
        limit: index,
        tool,
        entry: entry_id(limit, caller),
        amount,
        max: limit.kind.max(),
        window_end: window_end(now, limit.window),
    })
}

/// A JSON number as millionths: from 0 to [`MAX_AMOUNT`], at most 6 decimal places.
pub fn amount_units(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(u) => u.checked_mul(UNITS).filter(|_| u as f64 <= MAX_AMOUNT),
            None => n.as_f64().and_then(units_of),
        },
        _ => None,
    }
}

/// A number of whole units as millionths, when it has at most 6 decimal places and is in range.
pub fn units_of(x: f64) -> Option<u64> {
    if !x.is_finite() || !(0.0..=MAX_AMOUNT).contains(&x) {
        return None;
    }
    let scaled = (x * UNITS as f64).round();
    // Exact when the millionths give back the same number: 0.1 is, 0.1234567 is not.
    (scaled / UNITS as f64 == x).then_some(scaled as u64)
}

/// Millionths as a JSON number: an integer when whole.
pub fn units_value(units: u64) -> Value {
    if units.is_multiple_of(UNITS) {
        Value::from(units / UNITS)
    } else {
        Value::from(units as f64 / UNITS as f64)
    }
}

/// Why the record refuses the charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Charge number `charge` would take its counter over its maximum; `used` is the counter before the call.
    Exceeded { charge: usize, used: u64 },
    /// The record is unreadable or full (fail closed).
    Unavailable,
}

/// One live counter of the record.
struct Entry<'r> {
    window_end: i64,
    used: u64,
    id: &'r str,
}

/// The counter record after the charges at `now`: lines `<window-end> <used> <entry>`, ended windows dropped. All
/// charges are accepted or none (`Exceeded` names the first that would go over). A record that cannot be read is
/// treated as full, never as empty. A counter of the same entry with another window end (its limit's window was
/// changed) starts over.
pub fn claim(current: Option<&[u8]>, charges: &[Charge], now: i64) -> Result<Vec<u8>, Refused> {
    let mut entries: Vec<Entry<'_>> = Vec::new();
    if let Some(bytes) = current {
        let text = std::str::from_utf8(bytes).map_err(|_| Refused::Unavailable)?;
        for line in text.lines() {
            let mut fields = line.split(' ');
            let (Some(end), Some(used), Some(id), None) = (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(Refused::Unavailable);
            };
            let window_end: i64 = end.parse().map_err(|_| Refused::Unavailable)?;
            let used: u64 = used.parse().map_err(|_| Refused::Unavailable)?;
            if id.is_empty() {
                return Err(Refused::Unavailable);
            }
            if window_end > now {
                entries.push(Entry { window_end, used, id });
            }
        }
    }
    for (ci, c) in charges.iter().enumerate() {
        match entries.iter().position(|e| e.id == c.entry) {
            Some(at) => {
                let e = &mut entries[at];
                let used = if e.window_end == c.window_end { e.used } else { 0 };
                let next = used.checked_add(c.amount).ok_or(Refused::Unavailable)?;
                if next > c.max {
                    return Err(Refused::Exceeded { charge: ci, used });
                }
                e.used = next;
                e.window_end = c.window_end;
            }
            None => {
                if c.amount > c.max {
                    return Err(Refused::Exceeded { charge: ci, used: 0 });
                }
                entries.push(Entry { window_end: c.window_end, used: c.amount, id: &c.entry });
            }
        }
    }
    if entries.len() > MAX_ENTRIES {
        return Err(Refused::Unavailable);
    }
    let mut out = Vec::with_capacity(entries.len() * 56);
    for e in &entries {
        out.extend_from_slice(format!("{} {} {}\n", e.window_end, e.used, e.id).as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn calls(id: &str, per: &[LimitKey], window: i64, max: u64) -> Limit {
        Limit { id: id.into(), per: per.into(), window, kind: Kind::Calls { max }, owner: None }
    }

    fn caller<'a>(agent: &'a str, task: Option<&'a str>) -> Caller<'a> {
        Caller { agent, task, tool: "refunds.issue", environment: "prod" }
    }

    #[test]
    fn windows_are_aligned_on_the_epoch() {
        assert_eq!(window_end(0, 60), 60);
        assert_eq!(window_end(59, 60), 60);
        assert_eq!(window_end(60, 60), 120);
        assert_eq!(window_end(1_764_324_000, 86_400), 1_764_374_400);
        assert_eq!(window_end(-1, 60), 0);
        assert_eq!(window_end(i64::MAX, 60), i64::MAX);
    }

    #[test]
    fn keys_separate_what_per_names_and_only_that() {
        let per_agent = calls("l", &[LimitKey::Agent], 60, 1);
        let a = entry_id(&per_agent, &caller("a", Some("t1")));
        assert_eq!(a.len(), 32);
        assert_eq!(a, entry_id(&per_agent, &caller("a", Some("t2"))), "the task is not part of this key");
        assert_ne!(a, entry_id(&per_agent, &caller("b", Some("t1"))));
        assert_ne!(a, entry_id(&calls("m", &[LimitKey::Agent], 60, 1), &caller("a", None)), "another limit");
        let per_task = calls("l", &[LimitKey::Task], 60, 1);
        assert_ne!(entry_id(&per_task, &caller("a", Some("t1"))), entry_id(&per_task, &caller("a", Some("t2"))));
        assert_eq!(entry_id(&per_task, &caller("a", None)), entry_id(&per_task, &caller("b", Some(""))));
        // Length prefixes: ("ab", "c") and ("a", "bc") are different keys.
        let both = calls("l", &[LimitKey::Agent, LimitKey::Task], 60, 1);
        assert_ne!(entry_id(&both, &caller("ab", Some("c"))), entry_id(&both, &caller("a", Some("bc"))));
    }

    fn charge_of(entry: &str, amount: u64, max: u64, window_end: i64) -> Charge {
        Charge { limit: 0, tool: 0, entry: entry.into(), amount, max, window_end }
    }

    #[test]
    fn counts_up_to_the_maximum_then_refuses_without_consuming() {
        let c = [charge_of("aa", 1, 2, 60)];
        let one = claim(None, &c, 10).unwrap();
        assert_eq!(one, b"60 1 aa\n");
        let two = claim(Some(&one), &c, 11).unwrap();
        assert_eq!(two, b"60 2 aa\n");
        assert_eq!(claim(Some(&two), &c, 12), Err(Refused::Exceeded { charge: 0, used: 2 }));
        // Another key has its own counter.
        assert_eq!(claim(Some(&two), &[charge_of("bb", 1, 2, 60)], 12).unwrap(), b"60 2 aa\n60 1 bb\n");
        // The window ends: the counter is dropped and starts over.
        let next = charge_of("aa", 1, 2, 120);
        assert_eq!(claim(Some(&two), &[next], 60).unwrap(), b"120 1 aa\n");
    }

    #[test]
    fn charges_of_one_call_are_accepted_together_or_not_at_all() {
        let record = claim(None, &[charge_of("aa", 400, 500, 100)], 0).unwrap();
        // A budget and a rate limit: the budget refuses, so the rate limit's counter is not written either.
        let both = [charge_of("bb", 1, 10, 100), charge_of("aa", 200, 500, 100)];
        assert_eq!(claim(Some(&record), &both, 1), Err(Refused::Exceeded { charge: 1, used: 400 }));
        // A smaller amount fits; both counters move.
        let smaller = [charge_of("bb", 1, 10, 100), charge_of("aa", 100, 500, 100)];
        assert_eq!(claim(Some(&record), &smaller, 1).unwrap(), b"100 500 aa\n100 1 bb\n");
        // Two charges to one counter (two calls of a batch) add up.
        let twice = [charge_of("cc", 300, 500, 100), charge_of("cc", 300, 500, 100)];
        assert_eq!(claim(None, &twice, 1), Err(Refused::Exceeded { charge: 1, used: 300 }));
        // One amount over the whole budget is refused on an empty counter.
        assert_eq!(claim(None, &[charge_of("dd", 501, 500, 100)], 1), Err(Refused::Exceeded { charge: 0, used: 0 }));
    }

    #[test]
    fn a_changed_window_starts_the_counter_over() {
        let record = claim(None, &[charge_of("aa", 5, 5, 3_600)], 0).unwrap();
        assert_eq!(claim(Some(&record), &[charge_of("aa", 1, 5, 60)], 1).unwrap(), b"60 1 aa\n");
    }

    #[test]
    fn unreadable_or_full_records_fail_closed() {
        let c = [charge_of("aa", 1, 5, 60)];
        for bad in [&b"\xff"[..], b"nonsense\n", b"60 x aa\n", b"x 1 aa\n", b"60 1 aa extra\n", b"60 1 \n"] {
            assert_eq!(claim(Some(bad), &c, 0), Err(Refused::Unavailable), "{bad:?}");
        }
        let mut full = Vec::new();
        for i in 0..MAX_ENTRIES {
            full.extend_from_slice(format!("500 1 {i:032x}\n").as_bytes());
        }
        assert_eq!(claim(Some(&full), &c, 0), Err(Refused::Unavailable));
        // An existing counter still counts in a full record; once windows end there is room again.
        let existing = [charge_of(&format!("{:032x}", 7), 1, 5, 500)];
        assert!(claim(Some(&full), &existing, 0).is_ok());
        assert_eq!(claim(Some(&full), &c, 500).unwrap(), b"60 1 aa\n");
        // Overflow is refused, never wrapped.
        let huge = claim(None, &[charge_of("aa", u64::MAX, u64::MAX, 60)], 0).unwrap();
        assert_eq!(claim(Some(&huge), &[charge_of("aa", 1, u64::MAX, 60)], 0), Err(Refused::Unavailable));
    }

    #[test]
    fn budget_amounts_are_exact_millionths() {
        assert_eq!(amount_units(&json!(50)), Some(50_000_000));
        assert_eq!(amount_units(&json!(0)), Some(0));
        assert_eq!(amount_units(&json!(0.1)), Some(100_000));
        assert_eq!(amount_units(&json!(12.345678)), Some(12_345_678));
        assert_eq!(amount_units(&json!(9e9)), Some(9_000_000_000_000_000));
        for bad in [json!(-1), json!(0.1234567), json!(9.1e9), json!("50"), json!(null), json!([1])] {
            assert_eq!(amount_units(&bad), None, "{bad}");
        }
        assert_eq!(units_value(50_000_000), json!(50));
        assert_eq!(units_value(12_500_000), json!(12.5));
        let budget = Limit {
            id: "b".into(),
            per: Box::new([]),
            window: 86_400,
            kind: Kind::Budget { argument: "/amount".into(), pointer: Box::new(["amount".into()]), max: 500 * UNITS },
            owner: None,
        };
        let c = charge(3, &budget, 0, &caller("a", None), Some(&json!({"amount": 20})), 10).unwrap();
        assert_eq!((c.limit, c.amount, c.max, c.window_end), (3, 20 * UNITS, 500 * UNITS, 86_400));
        assert_eq!(
            charge(3, &budget, 0, &caller("a", None), Some(&json!({"amount": "20"})), 10),
            Err(BadAmount { limit: 3 })
        );
        assert_eq!(charge(3, &budget, 0, &caller("a", None), None, 10), Err(BadAmount { limit: 3 }));
    }
}
