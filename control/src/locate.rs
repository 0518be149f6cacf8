//! Maps a JSON pointer (RFC 6901) to the line and column where that value starts in the JSON text.
//!
//! Validation errors name JSON pointers (`/rules/3/tools/0`); editors want `FILE:LINE:COL`. [`locate`] scans the
//! text (it does not build a tree) and follows the pointer's tokens: object members by (unescaped) name, array
//! elements by index. When a token names something that does not exist, the position of the deepest value that
//! does exist is returned, so an error about a missing member points at its object. Lines and columns start at 1;
//! columns count characters.

/// A position in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Where the value `pointer` designates starts in `text` (see the module doc). `None` only if the text is not JSON
/// at all; an empty pointer or `/` designates the whole document.
pub fn locate(text: &str, pointer: &str) -> Option<Position> {
    let tokens: Vec<String> = if pointer.is_empty() || pointer == "/" {
        Vec::new()
    } else {
        pointer.strip_prefix('/')?.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect()
    };
    let mut s = Scanner { bytes: text.as_bytes(), pos: 0 };
    s.skip_ws();
    let mut found = s.pos;
    if s.pos >= s.bytes.len() {
        return None;
    }
    for token in &tokens {
        match s.child(token) {
            Some(at) => found = at,
            None => break,
        }
    }
    Some(position(text, found))
}

/// Line and column (1-based, columns in characters) of a byte offset.
pub fn position(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position { line, column: before[line_start..].chars().count() + 1 }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.skip_ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }

    /// With the scanner at a value: moves to the start of its child `token` and returns that offset.
    fn child(&mut self, token: &str) -> Option<usize> {
        self.skip_ws();
        match self.peek()? {
            b'{' => {
                self.pos += 1;
                loop {
                    self.skip_ws();
                    if self.peek()? == b'}' {
                        return None;
                    }
                    let key = self.string()?;
                    self.eat(b':')?;
                    self.skip_ws();
                    if key == token {
                        return Some(self.pos);
                    }
                    self.skip_value()?;
                    self.skip_ws();
                    match self.peek()? {
                        b',' => self.pos += 1,
                        _ => return None,
                    }
                }
            }
            b'[' => {
                let wanted: usize =
                    if token == "0" || !token.starts_with('0') { token.parse().ok()? } else { return None };
                self.pos += 1;
                let mut index = 0;
                loop {
                    self.skip_ws();
                    if self.peek()? == b']' {
                        return None;
                    }
                    if index == wanted {
                        return Some(self.pos);
                    }
                    self.skip_value()?;
                    index += 1;
                    self.skip_ws();
                    match self.peek()? {
                        b',' => self.pos += 1,
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }

    /// Reads a string at the current position and returns it unescaped.
    fn string(&mut self) -> Option<String> {
        self.skip_ws();
        if self.peek()? != b'"' {
            return None;
        }
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.pos += 2;
                }
                _ => self.pos += 1,
            }
        }
        let raw = self.bytes.get(start..self.pos)?;
        self.pos += 1;
        if !escaped {
            return String::from_utf8(raw.to_vec()).ok();
        }
        // Let serde_json unescape the literal, quotes included.
        let literal = self.bytes.get(start - 1..self.pos)?;
        serde_json::from_slice(literal).ok()
    }

    /// Skips one value of any kind.
    fn skip_value(&mut self) -> Option<()> {
        self.skip_ws();
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            _ => {
                while !matches!(self.peek(), None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                    self.pos += 1;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
  "format": "warden.bundle/v1",
  "a/b": {"m~n": 1},
  "rules": [
    {"id": "r0", "tools": ["x", "y"]},
    {
      "id": "r\"1",
      "tools": [ [1, {"z": "]}"}], "é", "t" ]
    }
  ],
  "tail": true
}"#;

    fn check(pointer: &str, line: usize, column: usize) {
        assert_eq!(locate(DOC, pointer), Some(Position { line, column }), "pointer {pointer}");
    }

    #[test]
    fn finds_members_and_elements() {
        check("", 1, 1);
        check("/", 1, 1);
        check("/format", 2, 13);
        check("/rules", 4, 12);
        check("/rules/0", 5, 5);
        check("/rules/0/id", 5, 12);
        check("/rules/0/tools/1", 5, 33);
        check("/rules/1", 6, 5);
        check("/rules/1/id", 7, 13);
        check("/rules/1/tools/1", 8, 36);
        check("/rules/1/tools/2", 8, 41);
        check("/tail", 11, 11);
    }

    #[test]
    fn unescapes_pointer_tokens_and_keys() {
        check("/a~1b", 3, 10);
        check("/a~1b/m~0n", 3, 18);
    }

    #[test]
    fn missing_parts_point_at_the_deepest_existing_value() {
        check("/rules/7", 4, 12);
        check("/rules/0/agents", 5, 5);
        check("/nothing/here", 1, 1);
        check("/rules/01", 4, 12);
    }

    #[test]
    fn not_json_is_none() {
        assert_eq!(locate("   ", "/a"), None);
    }
}
