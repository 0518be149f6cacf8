//! An independent, exact reading of JSON for the `args_digest` property: numbers are kept as exact decimals
//! (`1.0`, `1` and `10e-1` are one number; `2^64` and `2^64 + 1` are two), objects as sorted maps (the last of
//! repeated keys wins, as in serde_json). Not the product's parser: the point is to disagree with it when it is wrong.

use std::collections::BTreeMap;

/// A JSON value with exact numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exact {
    Null,
    Bool(bool),
    /// Sign (true: negative, never for zero), significant digits without leading or trailing zeros ("" for
    /// zero), and the exponent of the last digit: value = ±digits × 10^exp.
    Number(bool, String, i64),
    String(String),
    Array(Vec<Exact>),
    Object(BTreeMap<String, Exact>),
}

/// Parses a whole JSON text; `None` when it is not JSON (or nests deeper than 128).
pub fn parse(bytes: &[u8]) -> Option<Exact> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut p = Parser { s: text.as_bytes(), i: 0, text };
    let v = p.value(0)?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Exact> {
        if depth > 128 {
            return None;
        }
        self.ws();
        match *self.s.get(self.i)? {
            b'n' => self.word("null", Exact::Null),
            b't' => self.word("true", Exact::Bool(true)),
            b'f' => self.word("false", Exact::Bool(false)),
            b'"' => self.string().map(Exact::String),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Some(Exact::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Some(Exact::Array(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut map = BTreeMap::new();
                if self.eat(b'}') {
                    return Some(Exact::Object(map));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    let v = self.value(depth + 1)?;
                    map.insert(key, v);
                    if self.eat(b'}') {
                        return Some(Exact::Object(map));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            _ => self.number(),
        }
    }

    fn word(&mut self, w: &str, v: Exact) -> Option<Exact> {
        self.s[self.i..].starts_with(w.as_bytes()).then(|| {
            self.i += w.len();
            v
        })
    }

    fn string(&mut self) -> Option<String> {
        if self.s.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        let mut out = String::new();
        loop {
            let c = self.text[self.i..].chars().next()?;
            self.i += c.len_utf8();
            match c {
                '"' => return Some(out),
                '\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xd800..0xdc00).contains(&hi) {
                                if !self.s[self.i..].starts_with(b"\\u") {
                                    return None;
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return None;
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            out.push(char::from_u32(cp)?);
                        }
                        _ => return None,
                    }
                }
                c if (c as u32) < 0x20 => return None,
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.text.get(self.i..self.i + 4)?;
        self.i += 4;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(h, 16).ok()
    }

    fn number(&mut self) -> Option<Exact> {
        let start = self.i;
        let negative = self.s.get(self.i) == Some(&b'-');
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        let int = &self.text[int_start..self.i];
        if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
            return None;
        }
        let mut frac = "";
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            let f = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            frac = &self.text[f..self.i];
            if frac.is_empty() {
                return None;
            }
        }
        let mut exp: i64 = 0;
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            let sign = match self.s.get(self.i) {
                Some(b'-') => {
                    self.i += 1;
                    -1
                }
                Some(b'+') => {
                    self.i += 1;
                    1
                }
                _ => 1,
            };
            let e = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let digits = &self.text[e..self.i];
            if digits.is_empty() {
                return None;
            }
            exp = sign * digits.parse::<i64>().ok().filter(|v| *v < 1_000_000)?;
        }
        if self.i == start {
            return None;
        }
        let all = format!("{int}{frac}");
        let mut exp10 = exp - frac.len() as i64;
        let trimmed_end = all.trim_end_matches('0');
        exp10 += (all.len() - trimmed_end.len()) as i64;
        let digits = trimmed_end.trim_start_matches('0').to_string();
        if digits.is_empty() {
            return Some(Exact::Number(false, String::new(), 0));
        }
        Some(Exact::Number(negative, digits, exp10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_exact() {
        let n = |s: &str| parse(s.as_bytes()).unwrap();
        assert_eq!(n("1"), n("1.0"));
        assert_eq!(n("1"), n("10e-1"));
        assert_eq!(n("0"), n("-0.0"));
        assert_eq!(n("100"), n("1e2"));
        assert_ne!(n("18446744073709551616"), n("18446744073709551617"));
        assert_ne!(n("99.99999999999999999"), n("100.0000000000000001"));
        assert_eq!(n(r#"{"a":1,"b":[true,null,"x\u00e9"]}"#), n(r#"{"b":[true,null,"xé"],"a":1.00}"#));
        assert_eq!(n(r#"{"a":1,"a":2}"#), n(r#"{"a":2}"#));
        for bad in ["01", "1.", ".5", "-", "1e", "[1,]", "{\"a\"}", "\"\\x\"", "nul"] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
