//! The SQL dialects the statements run in. Every statement of this crate is
//! written once, in SQLite's dialect (which turso shares); [`postgres`]
//! gives its PostgreSQL form by a short list of rules, each a plain
//! rewrite of one SQLite construct into the PostgreSQL one that means the
//! same on litebus's tables:
//!
//! | SQLite | PostgreSQL |
//! |---|---|
//! | `?1`, `?` | `$1`, `$n` (the n-th bare one) |
//! | `typeof(x)` | `litebus_typeof(x)` (the schema's function: `'integer'`, `'text'`, `'blob'`, `'null'`) |
//! | `CAST(x AS BLOB)` | `litebus_blob(x)` (the bytes of a text, a blob as it is) |
//! | `CAST(x AS INTEGER)` | `CAST(x AS BIGINT)` |
//! | `MAX(a, b)`, `MIN(a, b)` | `GREATEST(a, b)`, `LEAST(a, b)` |
//! | `INSERT OR IGNORE INTO …` | `INSERT INTO … ON CONFLICT DO NOTHING` |
//! | `FROM (SELECT …)` | `FROM (SELECT …) AS litebus_q1` (PostgreSQL 15 names every subquery) |
//! | `x'00ff'` | `'\x00ff'::bytea` |
//! | `+m.topic` (SQLite's "no index here") | `m.topic` |
//!
//! A query that joins rows of different shapes with a `UNION ALL` (a
//! group's row and its candidates, in one round trip on SQLite) runs on
//! PostgreSQL, which wants one type per column, as one query per part:
//! [`postgres_parts`].
//!
//! The schema itself, with its triggers, is written for each dialect (see
//! `schema`): it is where the two differ most.

use std::fmt::Write as _;

/// The SQL a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// SQLite's (the sqlx SQLite driver, turso).
    #[default]
    Sqlite,
    /// PostgreSQL's.
    Postgres,
}

#[derive(Debug, Clone, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    /// A string literal with its quotes, or a quoted identifier.
    Quoted(&'a str),
    /// `x'…'`: the hex digits.
    Blob(&'a str),
    /// `?N` (`Some(N)`) or `?`.
    Param(Option<&'a str>),
    Open,
    Close,
    Comma,
    Space(&'a str),
    Other(&'a str),
}

fn tokens(sql: &str) -> Vec<Token<'_>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let token = match c {
            b'\'' | b'"' => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == c {
                        // A doubled quote is one quote inside.
                        if bytes.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i = (i + 1).min(bytes.len());
                Token::Quoted(&sql[start..i])
            }
            b'x' | b'X' if bytes.get(i + 1) == Some(&b'\'') => {
                let end = sql[i + 2..].find('\'').map_or(bytes.len(), |e| i + 2 + e);
                i = (end + 1).min(bytes.len());
                Token::Blob(&sql[start + 2..end.min(bytes.len())])
            }
            b'?' => {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                Token::Param((i > start + 1).then(|| &sql[start + 1..i]))
            }
            b'(' => {
                i += 1;
                Token::Open
            }
            b')' => {
                i += 1;
                Token::Close
            }
            b',' => {
                i += 1;
                Token::Comma
            }
            c if c.is_ascii_whitespace() => {
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                Token::Space(&sql[start..i])
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                Token::Word(&sql[start..i])
            }
            _ => {
                i += 1;
                Token::Other(&sql[start..i])
            }
        };
        out.push(token);
    }
    out
}

/// The index of the `)` that closes the `(` at `open`.
fn closing(tokens: &[Token<'_>], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

fn is_word(t: Option<&Token<'_>>, word: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
}

/// The next token after `i` that is not a space.
fn next_solid(tokens: &[Token<'_>], i: usize) -> Option<usize> {
    (i + 1..tokens.len()).find(|&j| !matches!(tokens[j], Token::Space(_)))
}

/// The last token before `end` that is not a space.
fn last_solid(tokens: &[Token<'_>], start: usize, end: usize) -> Option<usize> {
    (start..end)
        .rev()
        .find(|&j| !matches!(tokens[j], Token::Space(_)))
}

/// Words after a subquery's `)` that begin the next clause, not an alias.
const CLAUSES: &[&str] = &[
    "UNION",
    "WHERE",
    "ORDER",
    "LIMIT",
    "GROUP",
    "JOIN",
    "LEFT",
    "INNER",
    "CROSS",
    "ON",
    "HAVING",
    "EXCEPT",
    "INTERSECT",
    "RETURNING",
];

struct Writer {
    out: String,
    bare: usize,
    subqueries: usize,
}

impl Writer {
    fn write(&mut self, tokens: &[Token<'_>]) {
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                Token::Word(w) => {
                    let next = next_solid(tokens, i);
                    let call = next.filter(|&n| tokens[n] == Token::Open);
                    if let Some(open) = call {
                        let close = closing(tokens, open);
                        let inner = &tokens[open + 1..close.min(tokens.len())];
                        if w.eq_ignore_ascii_case("typeof") {
                            self.out.push_str("litebus_typeof(");
                            self.write(inner);
                            self.out.push(')');
                            i = close + 1;
                            continue;
                        }
                        if w.eq_ignore_ascii_case("CAST")
                            && let Some(ty) = last_solid(inner, 0, inner.len())
                            && let Some(as_) = last_solid(inner, 0, ty)
                            && is_word(inner.get(as_), "AS")
                        {
                            let value = last_solid(inner, 0, as_).map_or(0, |e| e + 1);
                            if is_word(inner.get(ty), "BLOB") {
                                self.out.push_str("litebus_blob(");
                                self.write(&inner[..value]);
                                self.out.push(')');
                                i = close + 1;
                                continue;
                            }
                            if is_word(inner.get(ty), "INTEGER") {
                                self.out.push_str("CAST(");
                                self.write(&inner[..value]);
                                self.out.push_str(" AS BIGINT)");
                                i = close + 1;
                                continue;
                            }
                        }
                        let scalar = if w.eq_ignore_ascii_case("MAX") {
                            Some("GREATEST")
                        } else if w.eq_ignore_ascii_case("MIN") {
                            Some("LEAST")
                        } else {
                            None
                        };
                        if let Some(scalar) = scalar
                            && has_top_level_comma(inner)
                        {
                            self.out.push_str(scalar);
                            self.out.push('(');
                            self.write(inner);
                            self.out.push(')');
                            i = close + 1;
                            continue;
                        }
                    }
                    if w.eq_ignore_ascii_case("INSERT")
                        && let Some(or) = next
                        && is_word(tokens.get(or), "OR")
                        && let Some(what) = next_solid(tokens, or)
                        && is_word(tokens.get(what), "IGNORE")
                    {
                        // The conflict clause goes at the end of the
                        // statement, before a `RETURNING`.
                        let returning = (what..tokens.len())
                            .find(|&j| is_word(tokens.get(j), "RETURNING"))
                            .unwrap_or(tokens.len());
                        self.out.push_str("INSERT");
                        self.write(&tokens[what + 1..returning]);
                        self.out.push_str(" ON CONFLICT DO NOTHING ");
                        self.write(&tokens[returning..]);
                        return;
                    }
                    self.out.push_str(w);
                    if w.eq_ignore_ascii_case("FROM")
                        && let Some(open) = next
                        && tokens[open] == Token::Open
                        && next_solid(tokens, open)
                            .is_some_and(|s| is_word(tokens.get(s), "SELECT"))
                    {
                        let close = closing(tokens, open);
                        self.write(&tokens[i + 1..=close.min(tokens.len() - 1)]);
                        let after = next_solid(tokens, close);
                        let aliased = after.is_some_and(|a| match &tokens[a] {
                            Token::Word(w) => !CLAUSES.iter().any(|c| w.eq_ignore_ascii_case(c)),
                            _ => false,
                        });
                        if !aliased {
                            self.subqueries += 1;
                            let _ = write!(self.out, " AS litebus_q{}", self.subqueries);
                        }
                        i = close + 1;
                        continue;
                    }
                }
                Token::Other("+")
                    if matches!(tokens.get(i + 1), Some(Token::Word(_)))
                        && last_solid(tokens, 0, i).is_none_or(|p| match &tokens[p] {
                            Token::Word(w) => ["WHERE", "AND", "OR", "ON", "NOT"]
                                .iter()
                                .any(|k| w.eq_ignore_ascii_case(k)),
                            Token::Open | Token::Comma => true,
                            _ => false,
                        }) => {}
                Token::Quoted(q) => self.out.push_str(q),
                Token::Blob(hex) => {
                    self.out.push_str("'\\x");
                    self.out.push_str(hex);
                    self.out.push_str("'::bytea");
                }
                Token::Param(Some(n)) => {
                    self.out.push('$');
                    self.out.push_str(n);
                }
                Token::Param(None) => {
                    self.bare += 1;
                    let _ = write!(self.out, "${}", self.bare);
                }
                Token::Open => self.out.push('('),
                Token::Close => self.out.push(')'),
                Token::Comma => self.out.push(','),
                Token::Space(s) | Token::Other(s) => self.out.push_str(s),
            }
            i += 1;
        }
    }
}

fn has_top_level_comma(tokens: &[Token<'_>]) -> bool {
    let mut depth = 0usize;
    for t in tokens {
        match t {
            Token::Open => depth += 1,
            Token::Close => depth = depth.saturating_sub(1),
            Token::Comma if depth == 0 => return true,
            _ => {}
        }
    }
    false
}

/// The PostgreSQL form of a statement written in SQLite's dialect.
#[must_use]
pub fn postgres(sql: &str) -> String {
    let tokens = tokens(sql);
    let mut writer = Writer {
        out: String::with_capacity(sql.len() + 32),
        bare: 0,
        subqueries: 0,
    };
    writer.write(&tokens);
    writer.out
}

/// The PostgreSQL form of a query written in SQLite's dialect, cut at each
/// `UNION ALL` outside parentheses: the parts, run one after the other with
/// the same parameters, give the rows the whole gives on SQLite. Any other
/// statement is one part.
#[must_use]
pub fn postgres_parts(sql: &str) -> Vec<String> {
    let tokens = tokens(sql);
    let query = tokens
        .iter()
        .find(|t| !matches!(t, Token::Space(_)))
        .is_some_and(|t| is_word(Some(t), "SELECT"));
    let mut cuts = Vec::new();
    if query {
        let mut depth = 0usize;
        for (i, t) in tokens.iter().enumerate() {
            match t {
                Token::Open => depth += 1,
                Token::Close => depth = depth.saturating_sub(1),
                Token::Word(w) if depth == 0 && w.eq_ignore_ascii_case("UNION") => {
                    if let Some(all) = next_solid(&tokens, i)
                        && is_word(tokens.get(all), "ALL")
                    {
                        cuts.push((i, all + 1));
                    }
                }
                _ => {}
            }
        }
    }
    let mut writer = Writer {
        out: String::new(),
        bare: 0,
        subqueries: 0,
    };
    let mut parts = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for (end, next) in cuts.into_iter().chain([(tokens.len(), tokens.len())]) {
        writer.write(&tokens[start..end]);
        parts.push(std::mem::take(&mut writer.out));
        start = next;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::postgres;

    fn same(sqlite: &str, pg: &str) {
        let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(norm(&postgres(sqlite)), norm(pg), "{sqlite}");
    }

    #[test]
    fn parameters_are_numbered_with_dollars() {
        same(
            "SELECT a FROM t WHERE b = ?2 AND c = ?1",
            "SELECT a FROM t WHERE b = $2 AND c = $1",
        );
        same("VALUES (?,?,?),(?,?,?)", "VALUES ($1,$2,$3),($4,$5,$6)");
        same("SELECT '?' , ?", "SELECT '?' , $1");
    }

    #[test]
    fn sqlite_functions_become_their_postgres_forms() {
        same(
            "SELECT typeof(m.id), CAST(m.id AS BLOB), CAST(x AS INTEGER), CAST(y AS TEXT)",
            "SELECT litebus_typeof(m.id), litebus_blob(m.id), CAST(x AS BIGINT), CAST(y AS TEXT)",
        );
        same(
            "SELECT MAX(0, MIN(?4, (SELECT MAX(seq) FROM t))), MIN(a)",
            "SELECT GREATEST(0, LEAST($4, (SELECT MAX(seq) FROM t))), MIN(a)",
        );
        same(
            "SELECT length(CAST(payload AS BLOB)) FROM m",
            "SELECT length(litebus_blob(payload)) FROM m",
        );
    }

    #[test]
    fn insert_or_ignore_gets_a_conflict_clause() {
        same(
            "INSERT OR IGNORE INTO h (a) SELECT a FROM m WHERE x = ?1",
            "INSERT INTO h (a) SELECT a FROM m WHERE x = $1 ON CONFLICT DO NOTHING",
        );
        same(
            "INSERT OR IGNORE INTO h (a) VALUES (1) RETURNING a",
            "INSERT INTO h (a) VALUES (1) ON CONFLICT DO NOTHING RETURNING a",
        );
    }

    #[test]
    fn subqueries_in_from_get_names() {
        same(
            "SELECT * FROM (SELECT 1) UNION ALL SELECT * FROM (SELECT 2 FROM t LIMIT 3)",
            "SELECT * FROM (SELECT 1) AS litebus_q1 UNION ALL SELECT * FROM (SELECT 2 FROM t LIMIT 3) AS litebus_q2",
        );
        same(
            "SELECT x FROM (SELECT 1 AS x) s WHERE x = 1",
            "SELECT x FROM (SELECT 1 AS x) s WHERE x = 1",
        );
    }

    #[test]
    fn a_query_is_cut_at_its_outer_unions() {
        let parts = super::postgres_parts(
            "SELECT a FROM g WHERE x = ? UNION ALL SELECT * FROM (SELECT 1 UNION ALL SELECT ?)",
        );
        let parts: Vec<String> = parts
            .iter()
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            parts,
            [
                "SELECT a FROM g WHERE x = $1",
                "SELECT * FROM (SELECT 1 UNION ALL SELECT $2) AS litebus_q1"
            ]
        );
        assert_eq!(
            super::postgres_parts("INSERT INTO t SELECT 1 UNION ALL SELECT 2").len(),
            1
        );
        same(
            "SELECT 1 FROM m WHERE +m.topic = ?",
            "SELECT 1 FROM m WHERE m.topic = $1",
        );
        same("SELECT a + b", "SELECT a + b");
    }

    #[test]
    fn literals_are_kept_and_blobs_become_bytea() {
        same(
            "INSERT INTO m (a, b) VALUES ('it''s typeof(x)', x'00ff')",
            "INSERT INTO m (a, b) VALUES ('it''s typeof(x)', '\\x00ff'::bytea)",
        );
    }
}
