//! Conditions on a call's arguments, compiled when the bundle loads, and the canonical form of the arguments that
//! step-up approvals bind to.
//!
//! A rule's `conditions` (all must hold) each name an argument by JSON Pointer (RFC 6901, `/amount`,
//! `/customer/id`, `/items/0`) and give one test: `equals`, `one_of`, numeric bounds (`min`, `max`,
//! `exclusive_min`, `exclusive_max`, combinable), `prefix`, `path_prefix`, `glob` or `present`. Everything is parsed
//! once by [`compile_conditions`]: pointers into tokens, `one_of` strings into a hash set, globs into tokens,
//! numbers into exact values, so evaluating a condition never parses policy text.
//!
//! Evaluation is three-valued ([`Truth`]): a test is `True` or `False` when the argument is there with the type the
//! test needs; it is `Unknown` when the argument is missing, has another type (a string `"50"` for a numeric
//! bound), or is a path that is not clean (`path_prefix`). Only `present` is never `Unknown`. A rule's conditions are
//! `False` if any is false, else `Unknown` if any is unknown, else `True`. What `decide` does with `Unknown` is in
//! `decide.rs`: it never loosens policy (an allow rule does not match; a deny or step-up rule denies).
//!
//! [`canonical_json`] is RFC 8785 (JCS) style: object members sorted by the UTF-16 code units of their names, no
//! whitespace, strings escaped minimally (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control characters as
//! `\u00xx` in lower-case hex, everything else literal UTF-8), numbers as ECMAScript prints an IEEE-754 double
//! (`1.5`, `100`, `1e+21`, `1e-7`), except that numbers written as integers that fit in 64 bits keep every digit
//! (JCS would round integers beyond ±2^53; Warden must not let two different amounts share a digest).
//! [`arguments_digest`] is the lower-case hex SHA-256 of that form; absent arguments digest as `{}`.
//!
//! The canonical form is exact only for numbers it can print without losing a digit: an integer that fits in 64
//! bits, or a number whose decimal value is the shortest round-trip text of the nearest double (`0.1`, `99.5`,
//! `1e21`). [`check_exact_numbers`] finds any other number in a JSON text (`18446744073709551616` beyond 64 bits,
//! `99.99999999999999999` or `9007199254740993.0` beyond double precision), which the MCP parser refuses: two
//! different amounts must never share a digest (nor compare equal in a condition). Equal digests therefore mean
//! equal arguments, numbers compared by value (`5`, `5.0` and `5e0` are one number).

use std::fmt::Write as _;

use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

use crate::bundle::ArgCondition;
use crate::fxhash::FxHashSet;
use crate::vocab::ValidationError;

/// Longest glob or prefix accepted in a condition (bytes).
const MAX_PATTERN: usize = 1024;

/// The value of a condition, or of a rule's conditions together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    /// The argument is missing, has the wrong type, or (for `path_prefix`) is not a clean path.
    Unknown,
}

impl Truth {
    pub fn as_str(self) -> &'static str {
        match self {
            Truth::True => "true",
            Truth::False => "false",
            Truth::Unknown => "unknown",
        }
    }

    fn from_bool(b: bool) -> Truth {
        if b {
            Truth::True
        } else {
            Truth::False
        }
    }
}

/// A number from a bundle, exact when it was written as an integer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn of(n: &Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            Some(Num::Int(i128::from(i)))
        } else if let Some(u) = n.as_u64() {
            Some(Num::Int(i128::from(u)))
        } else {
            n.as_f64().filter(|f| f.is_finite()).map(Num::Float)
        }
    }

    /// Total order between two JSON numbers (no NaN in JSON).
    fn cmp(self, other: Num) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (a, b) => {
                let (x, y) = (a.as_f64(), b.as_f64());
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// A scalar to compare with (`equals`, `one_of`).
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Num(Num),
    Str(Box<str>),
}

impl Scalar {
    fn of(v: &Value) -> Option<Scalar> {
        match v {
            Value::Null => Some(Scalar::Null),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::Number(n) => Num::of(n).map(Scalar::Num),
            Value::String(s) => Some(Scalar::Str(s.as_str().into())),
            Value::Array(_) | Value::Object(_) => None,
        }
    }

    fn test(&self, v: &Value) -> Truth {
        match (self, v) {
            (Scalar::Null, Value::Null) => Truth::True,
            (Scalar::Bool(a), Value::Bool(b)) => Truth::from_bool(a == b),
            (Scalar::Num(a), Value::Number(b)) => match Num::of(b) {
                Some(b) => Truth::from_bool(a.cmp(b).is_eq()),
                None => Truth::Unknown,
            },
            (Scalar::Str(a), Value::String(b)) => Truth::from_bool(**a == **b),
            _ => Truth::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum OneOf {
    Strings(FxHashSet<Box<str>>),
    Numbers(Box<[Num]>),
    Bools { t: bool, f: bool },
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Bounds {
    min: Option<Num>,
    max: Option<Num>,
    exclusive_min: Option<Num>,
    exclusive_max: Option<Num>,
}

/// One token of a compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GlobToken {
    Char(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**`: any run of characters.
    DoubleStar,
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Equals(Scalar),
    OneOf(OneOf),
    Bounds(Bounds),
    Prefix(Box<str>),
    /// Without a trailing `/` (except the root `/` itself).
    PathPrefix(Box<str>),
    Glob(Box<[GlobToken]>),
    Present(bool),
}

/// One compiled condition.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    pointer: Box<[Box<str>]>,
    test: Test,
    /// The condition as authored, for explanations: the argument's JSON Pointer and the test (`/amount max 500`).
    text: Box<str>,
    /// The argument's JSON Pointer as authored.
    argument: Box<str>,
}

/// A condition of a rule that did not hold for a call: which one, and how (for `explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCondition {
    /// Its position in the rule's `conditions`.
    pub index: usize,
    /// The argument's JSON Pointer as authored (`/amount`).
    pub argument: String,
    /// The condition as authored: pointer and test (`/amount max 500`).
    pub condition: String,
    /// `false`: the test failed; `unknown`: the argument is missing or of another type, so it cannot be checked.
    pub truth: Truth,
}

/// A rule's compiled conditions (all must hold).
#[derive(Debug, Clone, PartialEq)]
pub struct Conditions {
    list: Box<[Condition]>,
}

impl Conditions {
    /// Evaluates every condition against the call's arguments (`None`: the call has none).
    pub fn eval(&self, arguments: Option<&Value>) -> Truth {
        let mut unknown = false;
        for c in self.list.iter() {
            match c.eval(arguments) {
                Truth::False => return Truth::False,
                Truth::Unknown => unknown = true,
                Truth::True => {}
            }
        }
        if unknown {
            Truth::Unknown
        } else {
            Truth::True
        }
    }

    /// The condition that decides [`Conditions::eval`] when it is not `True`: the first false one, else the first
    /// that cannot be evaluated.
    pub fn failure(&self, arguments: Option<&Value>) -> Option<FailedCondition> {
        let mut unknown = None;
        for (index, c) in self.list.iter().enumerate() {
            match c.eval(arguments) {
                Truth::False => return Some(c.failed(index, Truth::False)),
                Truth::Unknown if unknown.is_none() => unknown = Some(c.failed(index, Truth::Unknown)),
                Truth::Unknown | Truth::True => {}
            }
        }
        unknown
    }

    /// Number of conditions.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none (never, for a compiled rule: an empty list is refused).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl Condition {
    fn failed(&self, index: usize, truth: Truth) -> FailedCondition {
        FailedCondition { index, argument: self.argument.to_string(), condition: self.text.to_string(), truth }
    }

    fn eval(&self, arguments: Option<&Value>) -> Truth {
        let found = arguments.and_then(|a| lookup(a, &self.pointer));
        if let Test::Present(want) = self.test {
            let present = found.is_some_and(|v| !v.is_null());
            return Truth::from_bool(present == want);
        }
        let Some(v) = found else { return Truth::Unknown };
        match &self.test {
            Test::Present(_) => Truth::Unknown,
            Test::Equals(s) => s.test(v),
            Test::OneOf(set) => match (set, v) {
                (OneOf::Strings(set), Value::String(s)) => Truth::from_bool(set.contains(s.as_str())),
                (OneOf::Numbers(list), Value::Number(n)) => match Num::of(n) {
                    Some(n) => Truth::from_bool(list.iter().any(|x| x.cmp(n).is_eq())),
                    None => Truth::Unknown,
                },
                (OneOf::Bools { t, f }, Value::Bool(b)) => Truth::from_bool(if *b { *t } else { *f }),
                _ => Truth::Unknown,
            },
            Test::Bounds(b) => {
                let Some(n) = v.as_number().and_then(Num::of) else { return Truth::Unknown };
                let ok = b.min.is_none_or(|m| n.cmp(m).is_ge())
                    && b.max.is_none_or(|m| n.cmp(m).is_le())
                    && b.exclusive_min.is_none_or(|m| n.cmp(m).is_gt())
                    && b.exclusive_max.is_none_or(|m| n.cmp(m).is_lt());
                Truth::from_bool(ok)
            }
            Test::Prefix(p) => match v {
                Value::String(s) => Truth::from_bool(s.starts_with(&**p)),
                _ => Truth::Unknown,
            },
            Test::PathPrefix(p) => match v {
                Value::String(s) if clean_path(s) => Truth::from_bool(under(s, p)),
                _ => Truth::Unknown,
            },
            Test::Glob(tokens) => match v {
                Value::String(s) if s.len() > MAX_GLOB_INPUT => Truth::Unknown,
                Value::String(s) => Truth::from_bool(glob_match(tokens, s)),
                _ => Truth::Unknown,
            },
        }
    }
}

/// The value at a pre-parsed JSON Pointer: object members by name, array elements by decimal index (no sign, no
/// leading zero).
pub(crate) fn lookup<'v>(root: &'v Value, pointer: &[Box<str>]) -> Option<&'v Value> {
    let mut v = root;
    for token in pointer {
        v = match v {
            Value::Object(map) => map.get(&**token)?,
            Value::Array(list) => {
                let t: &str = token;
                if t.is_empty() || (t.len() > 1 && t.starts_with('0')) || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                list.get(t.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(v)
}

/// An absolute path with no empty, `.` or `..` segments (a trailing `/` is allowed), no `\` and no control
/// characters.
fn clean_path(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('/') else { return false };
    if s.chars().any(|c| c == '\\' || c.is_control()) {
        return false;
    }
    if rest.is_empty() {
        return true;
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// `s` is `prefix` or below it (segment boundary). `prefix` has no trailing `/` unless it is `/`.
fn under(s: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match s.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Most tokens in a glob (each literal character and each `?`, `*`, `**` is one): the matcher's state is one bit per
/// pattern position, so this bounds the work per input character at [`GLOB_WORDS`] machine words.
pub(crate) const MAX_GLOB_TOKENS: usize = 256;

/// Machine words of the matcher's state (one bit per pattern position, `0..=MAX_GLOB_TOKENS`).
const GLOB_WORDS: usize = (MAX_GLOB_TOKENS + 1).div_ceil(64);

/// Longest argument string (bytes) a `glob` condition is evaluated on; a longer one is `Unknown` (a deny or step-up
/// rule denies it, an allow rule does not match), so one glob costs at most this many characters times
/// [`GLOB_WORDS`] word steps.
pub const MAX_GLOB_INPUT: usize = 64 * 1024;

type Bits = [u64; GLOB_WORDS];

fn bit(b: &mut Bits, i: usize) {
    if let Some(w) = b.get_mut(i / 64) {
        *w |= 1 << (i % 64);
    }
}

fn has_bit(b: &Bits, i: usize) -> bool {
    b.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// `x << 1` over the words (bit i moves to i + 1).
fn shifted(x: &Bits) -> Bits {
    let mut out = [0u64; GLOB_WORDS];
    let mut carry = 0;
    for (o, w) in out.iter_mut().zip(x) {
        *o = (w << 1) | carry;
        carry = w >> 63;
    }
    out
}

/// The glob as a bit-parallel automaton: bit `i` of the state says the first `i` tokens match the input read so
/// far. Built once per match from the tokens (no allocation per character).
struct GlobMachine {
    /// Positions whose token is a literal, per distinct literal character (sorted by character).
    by_char: Vec<(char, Bits)>,
    /// Positions whose token is `?`.
    one: Bits,
    /// Positions whose token is `*` / `**` (they may match the empty string).
    stars: Bits,
    /// Positions whose token is `*` (stays on any character but `/`) or `**` (stays on any character).
    star: Bits,
    double_star: Bits,
    len: usize,
}

impl GlobMachine {
    fn new(tokens: &[GlobToken]) -> Option<GlobMachine> {
        if tokens.len() > MAX_GLOB_TOKENS {
            return None;
        }
        let mut m = GlobMachine {
            by_char: Vec::new(),
            one: [0; GLOB_WORDS],
            stars: [0; GLOB_WORDS],
            star: [0; GLOB_WORDS],
            double_star: [0; GLOB_WORDS],
            len: tokens.len(),
        };
        for (i, t) in tokens.iter().enumerate() {
            match t {
                GlobToken::Char(c) => match m.by_char.binary_search_by(|(k, _)| k.cmp(c)) {
                    Ok(at) => bit(&mut m.by_char[at].1, i),
                    Err(at) => {
                        let mut b = [0; GLOB_WORDS];
                        bit(&mut b, i);
                        m.by_char.insert(at, (*c, b));
                    }
                },
                GlobToken::One => bit(&mut m.one, i),
                GlobToken::Star => {
                    bit(&mut m.star, i);
                    bit(&mut m.stars, i);
                }
                GlobToken::DoubleStar => {
                    bit(&mut m.double_star, i);
                    bit(&mut m.stars, i);
                }
            }
        }
        Some(m)
    }

    /// A star may match the empty string: a position before a star reaches the position after it.
    fn close(&self, state: &mut Bits) {
        loop {
            let mut through = [0u64; GLOB_WORDS];
            for ((t, s), st) in through.iter_mut().zip(state.iter()).zip(&self.stars) {
                *t = s & st;
            }
            let add = shifted(&through);
            let mut changed = false;
            for (s, a) in state.iter_mut().zip(add) {
                changed |= (*s | a) != *s;
                *s |= a;
            }
            if !changed {
                return;
            }
        }
    }

    /// Runs the automaton over `s`: whether it matches, and the number of characters stepped (each step is a fixed
    /// [`GLOB_WORDS`]-word update, so the work is linear in the input).
    fn run(&self, s: &str) -> (bool, usize) {
        let mut state = [0u64; GLOB_WORDS];
        bit(&mut state, 0);
        self.close(&mut state);
        let mut steps = 0;
        for c in s.chars() {
            steps += 1;
            let literal = self.by_char.binary_search_by(|(k, _)| k.cmp(&c)).ok().and_then(|i| self.by_char.get(i));
            let mut advance = [0u64; GLOB_WORDS];
            let mut stay = [0u64; GLOB_WORDS];
            for w in 0..GLOB_WORDS {
                let mut a = literal.map_or(0, |(_, b)| b[w]);
                let mut l = self.double_star[w];
                if c != '/' {
                    a |= self.one[w];
                    l |= self.star[w];
                }
                advance[w] = state[w] & a;
                stay[w] = state[w] & l;
            }
            let moved = shifted(&advance);
            let mut any = 0;
            for w in 0..GLOB_WORDS {
                state[w] = moved[w] | stay[w];
                any |= state[w];
            }
            if any == 0 {
                return (false, steps);
            }
            self.close(&mut state);
        }
        (has_bit(&state, self.len), steps)
    }
}

/// Glob match in time linear in the input: a bit-parallel automaton of at most [`MAX_GLOB_TOKENS`] + 1 states
/// (never backtracking, never exponential). A pattern over the bound (which [`parse_glob`] refuses) matches nothing.
fn glob_match(tokens: &[GlobToken], s: &str) -> bool {
    GlobMachine::new(tokens).is_some_and(|m| m.run(s).0)
}

/// Parses a glob: `**` (any run), `*` (any run without `/`), `?` (one character but `/`), anything else literal.
/// Used for argument globs and for MCP resource URI patterns.
pub(crate) fn parse_glob(raw: &str) -> Result<Box<[GlobToken]>, String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    if raw.len() > MAX_PATTERN {
        return Err(format!("too long (at most {MAX_PATTERN} bytes)"));
    }
    if raw.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters".into());
    }
    let mut out = Vec::with_capacity(raw.len().min(MAX_GLOB_TOKENS + 1));
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'*') {
                    return Err("\"***\" is not a pattern: use \"*\" or \"**\"".into());
                }
                GlobToken::DoubleStar
            }
            '*' => GlobToken::Star,
            '?' => GlobToken::One,
            c => GlobToken::Char(c),
        });
    }
    if out.len() > MAX_GLOB_TOKENS {
        return Err(format!(
            "{} tokens, at most {MAX_GLOB_TOKENS} (each character, \"?\", \"*\" and \"**\" is one token)",
            out.len()
        ));
    }
    Ok(out.into_boxed_slice())
}

/// Matches a glob from [`parse_glob`].
pub(crate) fn glob_matches(tokens: &[GlobToken], s: &str) -> bool {
    glob_match(tokens, s)
}

/// Whether a glob has no wildcard (an exact string).
pub(crate) fn glob_literal(tokens: &[GlobToken]) -> Option<String> {
    tokens
        .iter()
        .map(|t| match t {
            GlobToken::Char(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// Number of literal characters before the first wildcard (the more, the more specific).
pub(crate) fn glob_literal_prefix(tokens: &[GlobToken]) -> usize {
    tokens.iter().take_while(|t| matches!(t, GlobToken::Char(_))).count()
}

/// Parses a JSON Pointer into its unescaped tokens. The whole document (`""`) is refused: conditions name an
/// argument.
pub(crate) fn parse_pointer(raw: &str) -> Result<Box<[Box<str>]>, String> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(format!("invalid argument pointer \"{raw}\": a JSON Pointer such as \"/amount\""));
    };
    let mut out = Vec::new();
    for token in rest.split('/') {
        let mut t = String::with_capacity(token.len());
        let mut chars = token.chars();
        while let Some(c) = chars.next() {
            if c == '~' {
                match chars.next() {
                    Some('0') => t.push('~'),
                    Some('1') => t.push('/'),
                    _ => {
                        return Err(format!(
                            "invalid argument pointer \"{raw}\": \"~\" must be followed by \"0\" or \"1\""
                        ))
                    }
                }
            } else {
                t.push(c);
            }
        }
        out.push(t.into_boxed_str());
    }
    Ok(out.into_boxed_slice())
}

/// Compiles a rule's `conditions`; errors are located under `at` (`/rules/N/conditions`).
pub fn compile_conditions(list: &[ArgCondition], at: &str) -> Result<Conditions, Vec<ValidationError>> {
    let mut errs = Vec::new();
    if list.is_empty() {
        errs.push(ValidationError::new(at, "empty list: omit the field to match everything"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let loc = format!("{at}/{i}");
        match compile_one(c, &loc) {
            Ok(c) => out.push(c),
            Err(e) => errs.push(e),
        }
    }
    if errs.is_empty() {
        Ok(Conditions { list: out.into_boxed_slice() })
    } else {
        Err(errs)
    }
}

const TESTS: &str =
    "one of \"equals\", \"one_of\", \"min\"/\"max\"/\"exclusive_min\"/\"exclusive_max\", \"prefix\", \"path_prefix\", \"glob\", \"present\"";

fn compile_one(c: &ArgCondition, loc: &str) -> Result<Condition, ValidationError> {
    let pointer = parse_pointer(&c.argument).map_err(|m| ValidationError::new(format!("{loc}/argument"), m))?;
    let numeric = c.min.is_some() || c.max.is_some() || c.exclusive_min.is_some() || c.exclusive_max.is_some();
    let kinds = [
        c.equals.is_some(),
        c.one_of.is_some(),
        numeric,
        c.prefix.is_some(),
        c.path_prefix.is_some(),
        c.glob.is_some(),
        c.present.is_some(),
    ];
    match kinds.iter().filter(|&&k| k).count() {
        0 => return Err(ValidationError::new(loc, format!("no test: give {TESTS}"))),
        1 => {}
        _ => return Err(ValidationError::new(loc, format!("more than one test: give exactly {TESTS}"))),
    }
    let test = if let Some(v) = &c.equals {
        Test::Equals(Scalar::of(v).ok_or_else(|| {
            ValidationError::new(format!("{loc}/equals"), "must be a string, number, boolean or null")
        })?)
    } else if let Some(list) = &c.one_of {
        Test::OneOf(one_of(list, &format!("{loc}/one_of"))?)
    } else if numeric {
        let num = |n: &Option<Number>, field: &str| -> Result<Option<Num>, ValidationError> {
            match n {
                None => Ok(None),
                Some(n) => Num::of(n)
                    .map(Some)
                    .ok_or_else(|| ValidationError::new(format!("{loc}/{field}"), "not a finite number")),
            }
        };
        let b = Bounds {
            min: num(&c.min, "min")?,
            max: num(&c.max, "max")?,
            exclusive_min: num(&c.exclusive_min, "exclusive_min")?,
            exclusive_max: num(&c.exclusive_max, "exclusive_max")?,
        };
        let lows = [b.min, b.exclusive_min];
        let highs = [b.max, b.exclusive_max];
        for lo in lows.iter().flatten() {
            for hi in highs.iter().flatten() {
                if lo.cmp(*hi).is_gt() {
                    return Err(ValidationError::new(loc, "empty range: the lower bound is above the upper bound"));
                }
            }
        }
        Test::Bounds(b)
    } else if let Some(p) = &c.prefix {
        if p.is_empty() || p.len() > MAX_PATTERN {
            return Err(ValidationError::new(
                format!("{loc}/prefix"),
                format!("must be 1 to {MAX_PATTERN} bytes (an empty prefix matches every string: use \"present\")"),
            ));
        }
        Test::Prefix(p.as_str().into())
    } else if let Some(p) = &c.path_prefix {
        let trimmed = if p.len() > 1 { p.strip_suffix('/').unwrap_or(p) } else { p };
        if !clean_path(trimmed) || trimmed.len() > MAX_PATTERN {
            return Err(ValidationError::new(
                format!("{loc}/path_prefix"),
                format!(
                    "invalid path \"{p}\": an absolute path without empty, \".\" or \"..\" segments, \"\\\" or control characters"
                ),
            ));
        }
        Test::PathPrefix(trimmed.into())
    } else if let Some(g) = &c.glob {
        let tokens = parse_glob(g)
            .map_err(|m| ValidationError::new(format!("{loc}/glob"), format!("invalid glob \"{g}\": {m}")))?;
        Test::Glob(tokens)
    } else if let Some(p) = c.present {
        Test::Present(p)
    } else {
        return Err(ValidationError::new(loc, format!("no test: give {TESTS}")));
    };
    Ok(Condition { pointer, test, text: describe(c).into(), argument: c.argument.as_str().into() })
}

/// `<pointer> <test>` as authored, e.g. `/amount max 500`, `/currency one_of ["EUR","USD"]`.
fn describe(c: &ArgCondition) -> String {
    let mut parts = vec![c.argument.clone()];
    let mut add = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            parts.push(format!("{name} {v}"));
        }
    };
    add("equals", c.equals.as_ref().map(Value::to_string));
    add("one_of", c.one_of.as_ref().map(|l| Value::Array(l.clone()).to_string()));
    add("min", c.min.as_ref().map(Number::to_string));
    add("max", c.max.as_ref().map(Number::to_string));
    add("exclusive_min", c.exclusive_min.as_ref().map(Number::to_string));
    add("exclusive_max", c.exclusive_max.as_ref().map(Number::to_string));
    add("prefix", c.prefix.as_ref().map(|p| Value::String(p.clone()).to_string()));
    add("path_prefix", c.path_prefix.as_ref().map(|p| Value::String(p.clone()).to_string()));
    add("glob", c.glob.as_ref().map(|p| Value::String(p.clone()).to_string()));
    add("present", c.present.map(|p| p.to_string()));
    parts.join(" ")
}

fn one_of(list: &[Value], at: &str) -> Result<OneOf, ValidationError> {
    let same = "must be a non-empty list of strings, or of numbers, or of booleans (one type)";
    match list.first() {
        None => Err(ValidationError::new(at, same)),
        Some(Value::String(_)) => list
            .iter()
            .map(|v| v.as_str().map(Box::from))
            .collect::<Option<FxHashSet<Box<str>>>>()
            .map(OneOf::Strings)
            .ok_or_else(|| ValidationError::new(at, same)),
        Some(Value::Number(_)) => list
            .iter()
            .map(|v| v.as_number().and_then(Num::of))
            .collect::<Option<Vec<Num>>>()
            .map(|v| OneOf::Numbers(v.into_boxed_slice()))
            .ok_or_else(|| ValidationError::new(at, same)),
        Some(Value::Bool(_)) => {
            let mut t = false;
            let mut f = false;
            for v in list {
                match v {
                    Value::Bool(true) => t = true,
                    Value::Bool(false) => f = true,
                    _ => return Err(ValidationError::new(at, same)),
                }
            }
            Ok(OneOf::Bools { t, f })
        }
        Some(_) => Err(ValidationError::new(at, same)),
    }
}

/// The canonical JSON text of a value (see the module documentation).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

/// Lower-case hex SHA-256 of the canonical form of the arguments (`{}` when there are none).
pub fn arguments_digest(arguments: Option<&Value>) -> String {
    let text = match arguments {
        Some(v) => canonical_json(v),
        None => "{}".to_string(),
    };
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// A number in a JSON text that the canonical form cannot represent exactly (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InexactNumber {
    /// The number as written.
    pub text: String,
    /// Its byte offset in the JSON text.
    pub offset: usize,
}

impl std::fmt::Display for InexactNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the number {} at byte {} has no exact canonical form (beyond 64-bit integers or double precision); \
             send it as a string",
            self.text, self.offset
        )
    }
}

impl std::error::Error for InexactNumber {}

/// Checks every number of a JSON text (already parsed as valid JSON) for an exact canonical form: the first one
/// without is the error. One pass over the bytes, strings skipped.
pub fn check_exact_numbers(json: &str) -> Result<(), InexactNumber> {
    let b = json.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let text = &json[start..i];
                if !number_is_exact(text) {
                    return Err(InexactNumber { text: text.to_string(), offset: start });
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Whether a JSON number literal keeps its value in the canonical form: integers within 64 bits are printed as
/// they are; any other number goes through a double (parsed as `serde_json` parses it) and must come back as the
/// same decimal value.
fn number_is_exact(text: &str) -> bool {
    let integer = !text.contains(['.', 'e', 'E']);
    if integer && (text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok()) {
        return true;
    }
    let Ok(x) = serde_json::from_str::<f64>(text) else { return false };
    if !x.is_finite() {
        return false;
    }
    decimal_value(text) == decimal_value(&es_number(x))
}

/// A decimal number's value as (negative, significant digits without leading or trailing zeros, exponent `n` with
/// value = 0.DIGITS × 10^n); zero is `(false, "", 0)` whatever its spelling. `None` for a text that is not a number.
fn decimal_value(text: &str) -> Option<(bool, String, i64)> {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exp) = match rest.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.strip_prefix('+').unwrap_or(e).parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let all: String = int.chars().chain(frac.chars()).collect();
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_start_matches('0').trim_end_matches('0');
    if digits.is_empty() {
        return Some((false, String::new(), 0));
    }
    let n = (int.len() as i64).checked_add(exp)?.checked_sub(lead as i64)?;
    Some((neg, digits.to_string(), n))
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(list) => {
            out.push('[');
            for (i, item) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(n: &Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        out.push_str(&es_number(f));
    } else {
        out.push_str("null");
    }
}

/// ECMAScript `Number.prototype.toString` for a finite double (what RFC 8785 prescribes).
pub fn es_number(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".to_string();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    // Shortest round-trip digits, from serde_json's float formatting (already in the filter, unlike core's
    // `{:e}`): "ddd.ddd" or "d.ddde±x". Normalize to digits without leading/trailing zeros and the position `n` of
    // the decimal point (value = 0.DIGITS × 10^n).
    let text = serde_json::Number::from_f64(x.abs()).map(|n| n.to_string()).unwrap_or_default();
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.trim_start_matches('+').parse::<i32>().unwrap_or(0)),
        None => (text.as_str(), 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = int.chars().chain(frac.chars()).collect();
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_start_matches('0').trim_end_matches('0');
    if digits.is_empty() {
        return "0".to_string();
    }
    let n = int.len() as i32 + exp - lead as i32;
    let k = digits.len() as i32;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        let (a, b) = digits.split_at(n as usize);
        format!("{a}.{b}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let esign = if e < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        if rest.is_empty() {
            format!("{first}e{esign}{}", e.abs())
        } else {
            format!("{first}.{rest}e{esign}{}", e.abs())
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_null_is_a_test_for_json_null_not_an_absent_test() {
        // Read from bundle JSON, as a rule's condition arrives: a present `null` must stay a test.
        let c: ArgCondition = serde_json::from_str(r#"{"argument": "/coupon", "equals": null}"#).unwrap();
        assert_eq!(c.equals, Some(Value::Null));
        let absent: ArgCondition = serde_json::from_str(r#"{"argument": "/coupon"}"#).unwrap();
        assert_eq!(absent.equals, None);
        assert!(compile_conditions(&[absent], "/rules/0/conditions").is_err(), "no test at all is refused");
        let conds = compile_conditions(std::slice::from_ref(&c), "/rules/0/conditions").unwrap();
        assert_eq!(conds.eval(Some(&serde_json::json!({"coupon": null}))), Truth::True);
        // Another type is a mismatch, unknown as for every test (see `Truth`): an allow does not apply on it.
        assert_eq!(conds.eval(Some(&serde_json::json!({"coupon": "SAVE10"}))), Truth::Unknown);
        assert_eq!(conds.eval(Some(&serde_json::json!({}))), Truth::Unknown, "absent is not null");
        // And it survives a round trip through serde (fmt, diff and report serialize bundles).
        let back: ArgCondition = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let none =
            serde_json::to_value(ArgCondition { argument: "/x".into(), present: Some(true), ..Default::default() });
        assert!(none.unwrap().get("equals").is_none(), "an absent test is not written as null");
    }

    #[test]
    fn es_numbers() {
        for (x, want) in [
            (1.5, "1.5"),
            (100.0, "100"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1e-7, "1e-7"),
            (0.000001, "0.000001"),
            (-0.0, "0"),
            (123.456, "123.456"),
            (-2.5e-10, "-2.5e-10"),
            (1.2345e25, "1.2345e+25"),
            (0.1, "0.1"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ] {
            assert_eq!(es_number(x), want, "{x}");
        }
    }

    #[test]
    fn exact_numbers() {
        for ok in [
            "0",
            "-0",
            "0.0",
            "1",
            "-1",
            "100",
            "100.0",
            "1e2",
            "1E+2",
            "0.1",
            "99.5",
            "1.5e-7",
            "-2.5e-10",
            "9007199254740993",
            "18446744073709551615",
            "-9223372036854775808",
            "1e21",
            "100000000000000000000",
            "1.7976931348623157e308",
            "5e-324",
            "123.456",
        ] {
            assert!(number_is_exact(ok), "{ok}");
        }
        for bad in [
            "18446744073709551616",
            "18446744073709551617",
            "-9223372036854775809",
            "99.99999999999999999",
            "100.0000000000000001",
            "9007199254740993.0",
            "0.30000000000000000001",
            "1.00000000000000000000000001e5",
        ] {
            assert!(!number_is_exact(bad), "{bad}");
        }
        let text = r#"{"s":"1.00000000000000000001 \" 18446744073709551616","a":[1,2.5,{"b":-0.1}]}"#;
        assert_eq!(check_exact_numbers(text), Ok(()));
        let err = check_exact_numbers(r#"{"x":"99.99999999999999999","amount":99.99999999999999999}"#).unwrap_err();
        assert_eq!(err, InexactNumber { text: "99.99999999999999999".into(), offset: 37 });
    }

    /// A deterministic generator for the property test (xorshift64*): no dependency, the same cases every run.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        /// A JSON number literal: often near the edges of i64/u64/f64 precision, sometimes plain.
        fn number(&mut self) -> String {
            let neg = if self.below(4) == 0 { "-" } else { "" };
            let edges = ["18446744073709551615", "18446744073709551616", "9007199254740992", "100", "0.1", "99.99"];
            let mut int = match self.below(3) {
                0 => edges[self.below(edges.len() as u64) as usize].to_string(),
                _ => (0..1 + self.below(22)).map(|_| char::from(b'0' + self.below(10) as u8)).collect(),
            };
            while int.len() > 1 && int.starts_with('0') {
                int.remove(0);
            }
            let mut s = format!("{neg}{int}");
            if !s.contains('.') && self.below(2) == 0 {
                let frac: String = (0..1 + self.below(20)).map(|_| char::from(b'0' + self.below(10) as u8)).collect();
                s = format!("{s}.{frac}");
            }
            if self.below(4) == 0 {
                s = format!("{s}e{}", self.below(40) as i64 - 20);
            }
            s
        }
    }

    /// The value of a decimal literal, computed independently of [`decimal_value`]: an exact rational as
    /// (sign, digits, power of ten) with digits stripped of leading and trailing zeros.
    fn value(lit: &str) -> (bool, String, i64) {
        let neg = lit.starts_with('-');
        let lit = lit.trim_start_matches('-');
        let (m, e) = lit.split_once('e').map_or((lit, 0), |(m, e)| (m, e.parse::<i64>().unwrap()));
        let (i, f) = m.split_once('.').unwrap_or((m, ""));
        // value = int(i ++ f) × 10^(e - len(f))
        let mut digits = format!("{i}{f}");
        let mut pow = e - f.len() as i64;
        while digits.ends_with('0') {
            digits.pop();
            pow += 1;
        }
        let digits = digits.trim_start_matches('0').to_string();
        if digits.is_empty() {
            return (false, digits, 0);
        }
        (neg, digits, pow)
    }

    #[test]
    fn equal_digests_mean_equal_arguments() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut by_digest: std::collections::HashMap<String, (String, (bool, String, i64))> = Default::default();
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let lit = g.number();
            let text = format!(r#"{{"amount":{lit}}}"#);
            let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
            if check_exact_numbers(&text).is_err() {
                refused += 1;
                continue;
            }
            accepted += 1;
            let want = value(&lit);
            let digest = arguments_digest(Some(&v));
            if let Some((other, seen)) = by_digest.get(&digest) {
                assert_eq!(seen, &want, "{other} and {lit} share the digest {digest} but differ");
            }
            by_digest.insert(digest, (lit, want));
        }
        assert!(accepted > 5_000 && refused > 1_000, "accepted {accepted}, refused {refused}");
        // Every value has one digest: spellings of one number agree.
        for (a, b) in [("5", "5.0"), ("5", "5e0"), ("100", "1e2"), ("0.1", "1e-1"), ("-0", "0")] {
            let d = |t: &str| arguments_digest(Some(&serde_json::from_str::<Value>(t).unwrap()));
            assert_eq!(d(a), d(b), "{a} {b}");
        }
    }

    #[test]
    fn globs() {
        let g = |p: &str, s: &str| glob_matches(&parse_glob(p).unwrap(), s);
        assert!(g("/srv/*/r.csv", "/srv/a/r.csv"));
        assert!(!g("/srv/*/r.csv", "/srv/a/b/r.csv"));
        assert!(g("/srv/**", "/srv/a/b/r.csv"));
        assert!(g("/srv/**.csv", "/srv/a/b/r.csv"));
        assert!(!g("/srv/?", "/srv/ab"));
        assert!(g("a*b*c", "aXXbYYc"));
        assert!(!g("a*b*c", "aXXbYY"));
        assert!(g(&"*a".repeat(20), &"a".repeat(200)));
        assert!(!g(&"*a".repeat(20), &"a".repeat(19)));
    }

    #[test]
    fn glob_cost_is_bounded_at_compile_time_and_linear_in_the_input() {
        // Issue 19 item 16: a 1001-token glob is refused when the bundle compiles, at the condition's location.
        let huge = "*a".repeat(500) + "b";
        let cond =
            |glob: &str| ArgCondition { argument: "/path".into(), glob: Some(glob.into()), ..Default::default() };
        let errs = compile_conditions(&[cond(&huge)], "/rules/3/conditions").unwrap_err();
        assert_eq!(errs[0].location, "/rules/3/conditions/0/glob", "{errs:?}");
        assert!(errs[0].message.contains("1001 tokens, at most 256"), "{errs:?}");
        // The largest accepted glob over 1 MB: one fixed-size step per character, whatever the pattern.
        let widest = "*a".repeat(127) + "b*";
        let tokens = parse_glob(&widest).unwrap();
        assert_eq!(tokens.len(), 256);
        let input = "a".repeat(1 << 20);
        let (matched, steps) = GlobMachine::new(&tokens).unwrap().run(&input);
        assert!(!matched);
        assert_eq!(steps, 1 << 20, "linear: one step per character");
        let (matched, steps) = GlobMachine::new(&tokens).unwrap().run(&(input.clone() + "b"));
        assert!(matched);
        assert_eq!(steps, (1 << 20) + 1);
        // An argument over MAX_GLOB_INPUT is not matched at all: the condition is Unknown (never loosens policy).
        let c = compile_conditions(&[cond("**")], "/rules/0/conditions").unwrap();
        let long = serde_json::json!({"path": "x".repeat(MAX_GLOB_INPUT + 1)});
        assert_eq!(c.eval(Some(&long)), Truth::Unknown);
        let short = serde_json::json!({"path": "x".repeat(MAX_GLOB_INPUT)});
        assert_eq!(c.eval(Some(&short)), Truth::True);
    }

    #[test]
    fn globs_agree_with_a_backtracking_reference() {
        fn reference(p: &[GlobToken], s: &[char]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((GlobToken::Char(c), rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
                Some((GlobToken::One, rest)) => s.first().is_some_and(|&c| c != '/') && reference(rest, &s[1..]),
                Some((GlobToken::Star, rest)) => {
                    (0..=s.len()).take_while(|&i| i == 0 || s[i - 1] != '/').any(|i| reference(rest, &s[i..]))
                }
                Some((GlobToken::DoubleStar, rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
            }
        }
        let patterns = ["a*b", "a**b", "*/?", "**/x", "?*?", "a*/*b", "*", "**", "x?y*z**", "é*ü", "*.csv"];
        let inputs = ["", "ab", "axb", "a/b", "a/xb", "x/y", "/x", "abc/x", "xyz", "xqyz/z", "éü", "é/ü", "r.csv"];
        for p in patterns {
            let tokens = parse_glob(p).unwrap();
            for s in inputs {
                let chars: Vec<char> = s.chars().collect();
                assert_eq!(glob_matches(&tokens, s), reference(&tokens, &chars), "{p} on {s:?}");
            }
        }
    }

    #[test]
    fn paths() {
        assert!(clean_path("/srv/data/x"));
        assert!(clean_path("/srv/data/"));
        assert!(!clean_path("/srv/../etc"));
        assert!(!clean_path("/srv//etc"));
        assert!(!clean_path("srv"));
        assert!(!clean_path("/srv/./x"));
        assert!(!clean_path("/srv\\x"));
        assert!(under("/srv/data/x", "/srv/data"));
        assert!(under("/srv/data", "/srv/data"));
        assert!(!under("/srv/database", "/srv/data"));
    }
}
