//! How message metadata is written to storage and read back: a JSON object
//! of string values (`{"content-type":"text/plain"}`), so that plain SQL can
//! write it with `json_object(...)` and read it with `json_extract(...)`.
//!
//! Decoding is strict and total: any input gives a map or
//! [`Error::Corrupt`], never a panic. An empty input is an empty map.

use std::collections::BTreeMap;
use std::fmt::Write;

use litebus::{Error, Result};

/// Metadata as stored.
pub type Metadata = BTreeMap<String, String>;

/// Encodes metadata as a compact JSON object; an empty map is `{}`.
pub fn encode_metadata(metadata: &Metadata) -> String {
    let mut out = String::with_capacity(2 + metadata.len() * 16);
    out.push('{');
    for (i, (key, value)) in metadata.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(&mut out, key);
        out.push(':');
        write_string(&mut out, value);
    }
    out.push('}');
    out
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Decodes metadata written by [`encode_metadata`] or by SQL's
/// `json_object` with string values. Whitespace between tokens is allowed; a
/// repeated key keeps its last value.
pub fn decode_metadata(bytes: &[u8]) -> Result<Metadata> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Metadata::new());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("metadata is not UTF-8"))?;
    let mut parser = Parser {
        chars: text.char_indices().peekable(),
    };
    let map = parser.object()?;
    parser.skip_whitespace();
    if parser.chars.next().is_some() {
        return Err(corrupt("trailing characters after metadata object"));
    }
    Ok(map)
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(what.to_owned())
}

struct Parser<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
}

impl Parser<'_> {
    fn skip_whitespace(&mut self) {
        while self
            .chars
            .peek()
            .is_some_and(|&(_, c)| matches!(c, ' ' | '\t' | '\n' | '\r'))
        {
            self.chars.next();
        }
    }

    fn expect(&mut self, want: char) -> Result<()> {
        self.skip_whitespace();
        match self.chars.next() {
            Some((_, c)) if c == want => Ok(()),
            _ => Err(Error::Corrupt(format!("metadata: expected {want:?}"))),
        }
    }

    fn object(&mut self) -> Result<Metadata> {
        self.expect('{')?;
        let mut map = Metadata::new();
        self.skip_whitespace();
        if self.chars.peek().is_some_and(|&(_, c)| c == '}') {
            self.chars.next();
            return Ok(map);
        }
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            self.expect(':')?;
            self.skip_whitespace();
            let value = self.string()?;
            map.insert(key, value);
            self.skip_whitespace();
            match self.chars.next() {
                Some((_, ',')) => {}
                Some((_, '}')) => return Ok(map),
                _ => return Err(corrupt("metadata: expected ',' or '}'")),
            }
        }
    }

    fn string(&mut self) -> Result<String> {
        match self.chars.next() {
            Some((_, '"')) => {}
            _ => return Err(corrupt("metadata: keys and values must be strings")),
        }
        let mut out = String::new();
        loop {
            match self.chars.next() {
                None => return Err(corrupt("metadata: unterminated string")),
                Some((_, '"')) => return Ok(out),
                Some((_, '\\')) => out.push(self.escape()?),
                Some((_, c)) if u32::from(c) < 0x20 => {
                    return Err(corrupt("metadata: raw control character in string"));
                }
                Some((_, c)) => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char> {
        Ok(match self.chars.next() {
            Some((_, '"')) => '"',
            Some((_, '\\')) => '\\',
            Some((_, '/')) => '/',
            Some((_, 'b')) => '\u{8}',
            Some((_, 'f')) => '\u{c}',
            Some((_, 'n')) => '\n',
            Some((_, 'r')) => '\r',
            Some((_, 't')) => '\t',
            Some((_, 'u')) => {
                let first = self.hex4()?;
                if (0xD800..0xDC00).contains(&first) {
                    // A high surrogate must be followed by an escaped low one.
                    if self.chars.next().map(|(_, c)| c) != Some('\\')
                        || self.chars.next().map(|(_, c)| c) != Some('u')
                    {
                        return Err(corrupt("metadata: lone surrogate"));
                    }
                    let second = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&second) {
                        return Err(corrupt("metadata: lone surrogate"));
                    }
                    let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                    char::from_u32(code).ok_or_else(|| corrupt("metadata: bad escape"))?
                } else {
                    char::from_u32(first).ok_or_else(|| corrupt("metadata: lone surrogate"))?
                }
            }
            _ => return Err(corrupt("metadata: bad escape")),
        })
    }

    fn hex4(&mut self) -> Result<u32> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = self
                .chars
                .next()
                .and_then(|(_, c)| c.to_digit(16))
                .ok_or_else(|| corrupt("metadata: bad \\u escape"))?;
            value = value * 16 + digit;
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Metadata {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn round_trips_awkward_strings() {
        let m = map(&[
            ("plain", "value"),
            ("quote\"back\\slash", "new\nline\ttab\r"),
            ("control", "\u{1}\u{1f}"),
            ("unicode", "héllo 🦀"),
            ("", ""),
        ]);
        assert_eq!(decode_metadata(encode_metadata(&m).as_bytes()).unwrap(), m);
        assert_eq!(encode_metadata(&Metadata::new()), "{}");
    }

    #[test]
    fn reads_what_sql_json_object_writes() {
        let m = decode_metadata(br#" { "a" : "1" , "b":"\u00e9\ud83e\udd80\/" } "#).unwrap();
        assert_eq!(m, map(&[("a", "1"), ("b", "é🦀/")]));
        assert!(decode_metadata(b"").unwrap().is_empty());
    }

    #[test]
    fn refuses_everything_else_with_corrupt() {
        for bad in [
            &b"{"[..],
            b"[]",
            b"{\"a\":1}",
            b"{\"a\":\"1\",}",
            b"{\"a\":\"1\"} x",
            b"{\"a\":\"\\ud800\"}",
            b"{\"a\":\"\\udc00\"}",
            b"{\"a\":\"\\x\"}",
            b"{\"a\":\"raw\nnewline\"}",
            b"{\"a\":\"\xff\"}",
            b"null",
            // Right shape, wrong punctuation.
            b"(\"a\":\"1\"}",
            b"{\"a\"=\"1\"}",
        ] {
            assert!(
                matches!(decode_metadata(bad), Err(Error::Corrupt(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn metadata_encoding_escapes_exactly_the_control_characters() {
        let m = map(&[("k", " \u{1f}\u{8}\u{c}~")]);
        let encoded = encode_metadata(&m);
        assert_eq!(encoded, r#"{"k":" \u001f\u0008\u000c~"}"#);
        assert_eq!(decode_metadata(encoded.as_bytes()).unwrap(), m);
        let escapes = decode_metadata(br#"{"k":"\b\f"}"#).unwrap();
        assert_eq!(escapes["k"], "\u{8}\u{c}");
        assert!(decode_metadata(br#"{"k" "v"}"#).is_err());
        assert!(decode_metadata(br#"{"k":"v"]"#).is_err());
    }
}
