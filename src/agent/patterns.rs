//! Lua 5.4 pattern matching, ported from `lstrlib.c` so that it can stop.
//!
//! The C matcher backtracks without bound (`("a"):rep(40):find(("a*"):rep(20) .. "b")`
//! runs for ages) and, being a single C call, is never reached by the VM's count
//! hook. This port makes the same moves in the same order, so results are
//! identical, and asks its `check` function every few thousand steps whether
//! the callback's budget still allows it to go on.

use crate::error::Error;

/// Deepest recursion of the matcher (`MAXCCALLS` in `lstrlib.c`).
const MAX_DEPTH: usize = 200;
/// Most captures in one pattern (`LUA_MAXCAPTURES`).
const MAX_CAPTURES: usize = 32;
/// Matching steps between two calls of the budget check.
const CHECK_EVERY: u32 = 4096;
/// Characters that make a pattern more than a plain string.
const SPECIALS: &[u8] = b"^$*+?.([%-";

const CAP_UNFINISHED: isize = -1;
const CAP_POSITION: isize = -2;

/// Why a match stopped without an answer.
#[derive(Debug)]
pub enum PatternError {
    /// The pattern is malformed; the message is Lua's.
    Malformed(String),
    /// The budget ran out.
    Budget(Error),
}

/// A capture of a successful match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    /// The bytes `start..end` of the subject.
    Text(usize, usize),
    /// A position capture `()`: a 1-based position.
    Position(usize),
}

type Step<T> = Result<T, PatternError>;

/// One pattern matched against one subject (`MatchState` in `lstrlib.c`).
pub struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    capture: [(usize, isize); MAX_CAPTURES],
    depth: usize,
    steps: u32,
    check: &'a dyn Fn() -> Result<(), Error>,
}

fn malformed<T>(msg: impl Into<String>) -> Step<T> {
    Err(PatternError::Malformed(msg.into()))
}

/// True when `p` has none of the characters that make a pattern.
pub fn is_plain(p: &[u8]) -> bool {
    !p.iter().any(|c| SPECIALS.contains(c))
}

/// Whether `pat` (without a leading `^`) is a well-formed Lua pattern,
/// checked whole and at once: Lua finds a malformed part only when a match
/// reaches it, so a pattern given once for many matches (`orrery test
/// --filter`) is checked here first. The error is Lua's own words.
pub fn check(pat: &[u8]) -> Result<(), String> {
    let mut open: Vec<bool> = Vec::new(); // each capture: closed yet?
    let mut p = 0;
    while p < pat.len() {
        match pat[p] {
            b'(' => {
                if open.len() >= MAX_CAPTURES {
                    return Err("too many captures".into());
                }
                // `()` is a position capture, closed at once.
                let position = pat.get(p + 1) == Some(&b')');
                open.push(position);
                p += if position { 2 } else { 1 };
                continue;
            }
            b')' => {
                let Some(l) = open.iter().rposition(|closed| !closed) else {
                    return Err("invalid pattern capture".into());
                };
                open[l] = true;
                p += 1;
                continue;
            }
            b'%' => match pat.get(p + 1) {
                None => return Err("malformed pattern (ends with '%')".into()),
                Some(b'b') => {
                    if pat.len() < p + 4 {
                        return Err("missing arguments to '%b'".into());
                    }
                    p += 4;
                    continue;
                }
                Some(b'f') => {
                    if pat.get(p + 2) != Some(&b'[') {
                        return Err("missing '[' after '%f' in pattern".into());
                    }
                    p = set_end(pat, p + 2)?;
                    continue;
                }
                Some(d @ b'0'..=b'9') => {
                    let l = (*d as usize).wrapping_sub(b'1' as usize);
                    if l >= open.len() || !open[l] {
                        return Err(format!(
                            "invalid capture index %{}",
                            l.wrapping_add(1) as isize
                        ));
                    }
                    p += 2;
                }
                Some(_) => p += 2,
            },
            b'[' => p = set_end(pat, p)?,
            _ => p += 1,
        }
        // A single-character class may take one quantifier.
        if matches!(pat.get(p), Some(b'?' | b'*' | b'+' | b'-')) {
            p += 1;
        }
    }
    if open.iter().any(|closed| !closed) {
        return Err("unfinished capture".into());
    }
    Ok(())
}

/// The end of the set `[...]` that starts at `p` (`classEnd` of `lstrlib.c`).
fn set_end(pat: &[u8], p: usize) -> Result<usize, String> {
    let missing = || "malformed pattern (missing ']')".to_string();
    let mut p = p + 1;
    if pat.get(p) == Some(&b'^') {
        p += 1;
    }
    loop {
        let c = *pat.get(p).ok_or_else(missing)?;
        p += 1;
        if c == b'%' {
            pat.get(p).ok_or_else(missing)?;
            p += 1;
        }
        if pat.get(p) == Some(&b']') {
            return Ok(p + 1);
        }
    }
}

/// `posrelatI` of `lstrlib.c`: a 1-based start position from Lua's `init`.
pub fn start_index(init: i64, len: usize) -> usize {
    if init > 0 {
        init as usize
    } else if init == 0 || init < -(len as i64) {
        1
    } else {
        (len as i64 + init + 1) as usize
    }
}

fn match_class(c: u8, cl: u8) -> bool {
    let res = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => c == b' ' || (b'\t'..=b'\r').contains(&c),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        _ => return cl == c,
    };
    if cl.is_ascii_uppercase() { !res } else { res }
}

impl<'a> Matcher<'a> {
    /// A matcher of `pat` (without any leading `^`) over `src`.
    pub fn new(src: &'a [u8], pat: &'a [u8], check: &'a dyn Fn() -> Result<(), Error>) -> Self {
        Matcher {
            src,
            pat,
            level: 0,
            capture: [(0, 0); MAX_CAPTURES],
            depth: MAX_DEPTH,
            steps: 0,
            check,
        }
    }

    /// The pattern byte at `i`, or 0 past its end (C reads the terminating NUL).
    fn p(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    /// The subject byte at `i`, or 0 past its end.
    fn s(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    fn tick(&mut self) -> Step<()> {
        self.steps += 1;
        if self.steps >= CHECK_EVERY {
            self.steps = 0;
            (self.check)().map_err(PatternError::Budget)?;
        }
        Ok(())
    }

    /// Tries the pattern at subject position `s`; the end of the match if it matches.
    pub fn match_at(&mut self, s: usize) -> Step<Option<usize>> {
        self.level = 0;
        self.depth = MAX_DEPTH;
        self.do_match(s, 0)
    }

    fn class_end(&self, mut p: usize) -> Step<usize> {
        let c = self.p(p);
        p += 1;
        match c {
            b'%' => {
                if p >= self.pat.len() {
                    return malformed("malformed pattern (ends with '%')");
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.p(p) == b'^' {
                    p += 1;
                }
                loop {
                    if p >= self.pat.len() {
                        return malformed("malformed pattern (missing ']')");
                    }
                    let c = self.p(p);
                    p += 1;
                    if c == b'%' && p < self.pat.len() {
                        p += 1;
                    }
                    if self.p(p) == b']' {
                        return Ok(p + 1);
                    }
                }
            }
            _ => Ok(p),
        }
    }

    /// `p` is the `[`, `ec` the closing `]`.
    fn match_bracket_class(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.p(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                return !sig;
            }
            if self.p(p) == b'%' {
                p += 1;
                if match_class(c, self.p(p)) {
                    return sig;
                }
            } else if self.p(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.p(p - 2) <= c && c <= self.p(p) {
                    return sig;
                }
            } else if self.p(p) == c {
                return sig;
            }
        }
    }

    fn single_match(&self, s: usize, p: usize, ep: usize) -> bool {
        if s >= self.src.len() {
            return false;
        }
        let c = self.src[s];
        match self.p(p) {
            b'.' => true,
            b'%' => match_class(c, self.p(p + 1)),
            b'[' => self.match_bracket_class(c, p, ep - 1),
            pc => pc == c,
        }
    }

    fn match_balance(&mut self, s: usize, p: usize) -> Step<Option<usize>> {
        if p + 1 >= self.pat.len() {
            return malformed("malformed pattern (missing arguments to '%b')");
        }
        if s >= self.src.len() || self.src[s] != self.p(p) {
            return Ok(None);
        }
        let (b, e) = (self.p(p), self.p(p + 1));
        let mut depth = 1;
        let mut s = s + 1;
        while s < self.src.len() {
            self.tick()?;
            let c = self.src[s];
            if c == e {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(s + 1));
                }
            } else if c == b {
                depth += 1;
            }
            s += 1;
        }
        Ok(None)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Step<Option<usize>> {
        let mut i = 0;
        while self.single_match(s + i, p, ep) {
            self.tick()?;
            i += 1;
        }
        loop {
            if let Some(res) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(res));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Step<Option<usize>> {
        loop {
            if let Some(res) = self.do_match(s, ep + 1)? {
                return Ok(Some(res));
            }
            if self.single_match(s, p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> Step<Option<usize>> {
        if self.level >= MAX_CAPTURES {
            return malformed("too many captures");
        }
        self.capture[self.level] = (s, what);
        self.level += 1;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.level -= 1;
        }
        Ok(res)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Step<Option<usize>> {
        let Some(l) = (0..self.level)
            .rev()
            .find(|&l| self.capture[l].1 == CAP_UNFINISHED)
        else {
            return malformed("invalid pattern capture");
        };
        self.capture[l].1 = (s - self.capture[l].0) as isize;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.capture[l].1 = CAP_UNFINISHED;
        }
        Ok(res)
    }

    fn match_capture(&mut self, s: usize, l: u8) -> Step<Option<usize>> {
        let l = self.check_capture(l)?;
        let (init, len) = self.capture[l];
        if len < 0 {
            return Ok(None); // a position capture never matches text
        }
        let len = len as usize;
        if self.src.len() - s >= len && self.src[init..init + len] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    fn check_capture(&self, l: u8) -> Step<usize> {
        let l = l as isize - b'1' as isize;
        if l < 0 || l as usize >= self.level || self.capture[l as usize].1 == CAP_UNFINISHED {
            return malformed(format!("invalid capture index %{}", l + 1));
        }
        Ok(l as usize)
    }

    fn do_match(&mut self, mut s: usize, mut p: usize) -> Step<Option<usize>> {
        if self.depth == 0 {
            return malformed("pattern too complex");
        }
        self.depth -= 1;
        self.tick()?;
        let result = loop {
            if p >= self.pat.len() {
                break Some(s);
            }
            match self.p(p) {
                b'(' => {
                    break if self.p(p + 1) == b')' {
                        self.start_capture(s, p + 2, CAP_POSITION)?
                    } else {
                        self.start_capture(s, p + 1, CAP_UNFINISHED)?
                    };
                }
                b')' => break self.end_capture(s, p + 1)?,
                b'$' if p + 1 == self.pat.len() => {
                    break (s == self.src.len()).then_some(s);
                }
                b'%' if self.p(p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    Some(next) => {
                        s = next;
                        p += 4;
                    }
                    None => break None,
                },
                b'%' if self.p(p + 1) == b'f' => {
                    p += 2;
                    if self.p(p) != b'[' {
                        return malformed("missing '[' after '%f' in pattern");
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.s(s - 1) };
                    if !self.match_bracket_class(previous, p, ep - 1)
                        && self.match_bracket_class(self.s(s), p, ep - 1)
                    {
                        p = ep;
                    } else {
                        break None;
                    }
                }
                b'%' if self.p(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.p(p + 1))? {
                        Some(next) => {
                            s = next;
                            p += 2;
                        }
                        None => break None,
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let suffix = self.p(ep);
                    if !self.single_match(s, p, ep) {
                        if matches!(suffix, b'*' | b'?' | b'-') {
                            p = ep + 1;
                            continue;
                        }
                        break None;
                    }
                    match suffix {
                        b'?' => match self.do_match(s + 1, ep + 1)? {
                            Some(res) => break Some(res),
                            None => p = ep + 1,
                        },
                        b'+' => break self.max_expand(s + 1, p, ep)?,
                        b'*' => break self.max_expand(s, p, ep)?,
                        b'-' => break self.min_expand(s, p, ep)?,
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
            self.tick()?;
        };
        self.depth += 1;
        Ok(result)
    }

    /// Capture `i` of the match `s..e` (the whole match when the pattern has no captures).
    pub fn capture(&self, i: usize, s: usize, e: usize) -> Step<Capture> {
        if i >= self.level {
            if i != 0 {
                return malformed(format!("invalid capture index %{}", i + 1));
            }
            return Ok(Capture::Text(s, e));
        }
        let (init, len) = self.capture[i];
        match len {
            CAP_UNFINISHED => malformed("unfinished capture"),
            CAP_POSITION => Ok(Capture::Position(init + 1)),
            len => Ok(Capture::Text(init, init + len as usize)),
        }
    }

    /// Every capture of the match `s..e`; `whole` adds the whole match when the
    /// pattern has no captures (as `match` and `gmatch` do, and `find` does not).
    pub fn captures(&self, s: usize, e: usize, whole: bool) -> Step<Vec<Capture>> {
        let n = if self.level == 0 && whole {
            1
        } else {
            self.level
        };
        (0..n).map(|i| self.capture(i, s, e)).collect()
    }
}

/// Plain substring search from `init` (0-based), checking the budget as it goes.
pub fn find_plain(
    src: &[u8],
    pat: &[u8],
    init: usize,
    check: &dyn Fn() -> Result<(), Error>,
) -> Step<Option<usize>> {
    if pat.is_empty() {
        return Ok(Some(init));
    }
    if pat.len() > src.len() - init {
        return Ok(None);
    }
    for (n, start) in (init..=src.len() - pat.len()).enumerate() {
        if n as u32 % CHECK_EVERY == CHECK_EVERY - 1 {
            check().map_err(PatternError::Budget)?;
        }
        if src[start] == pat[0] && &src[start..start + pat.len()] == pat {
            return Ok(Some(start));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(src: &str, pat: &str) -> Option<(usize, usize)> {
        let ok = || Ok(());
        let (anchor, pat) = match pat.strip_prefix('^') {
            Some(p) => (true, p),
            None => (false, pat),
        };
        let mut m = Matcher::new(src.as_bytes(), pat.as_bytes(), &ok);
        let mut s = 0;
        loop {
            if let Some(e) = m.match_at(s).unwrap() {
                return Some((s + 1, e));
            }
            if anchor || s >= src.len() {
                return None;
            }
            s += 1;
        }
    }

    #[test]
    fn matches_like_lua() {
        assert_eq!(find("hello world", "o w"), Some((5, 7)));
        assert_eq!(find("hello", "l+"), Some((3, 4)));
        assert_eq!(find("  x", "^%s*x$"), Some((1, 3)));
        assert_eq!(find("f(a(b)c)", "%b()"), Some((2, 8)));
        assert_eq!(find("THE (quick) fox", "%f[%a]%a+"), Some((1, 3)));
        assert_eq!(find("abcabc", "(abc)%1"), Some((1, 6)));
        assert_eq!(find("key = value", "(%w+)%s*=%s*(%w+)"), Some((1, 11)));
        assert_eq!(find("aaa", "a-b"), None);
    }

    #[test]
    fn a_spent_budget_stops_backtracking() {
        let subject = "a".repeat(40);
        let pattern = "a*".repeat(20) + "b";
        let spent = || {
            Err(Error::AgentTimeout {
                what: "test".into(),
                limit_ms: 0,
            })
        };
        let mut m = Matcher::new(subject.as_bytes(), pattern.as_bytes(), &spent);
        assert!(matches!(m.match_at(0), Err(PatternError::Budget(_))));
    }

    #[test]
    fn malformed_patterns_are_found_whole_in_lua_words() {
        for ok in [
            "", "a", "a.b", "[%]]", "[]]", "[^]x]", "%d+", "(a)(b)%2", "()", "%bxy", "%f[%w]",
            "x$", "a-?",
        ] {
            assert_eq!(super::check(ok.as_bytes()), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("(", "unfinished capture"),
            ("a(b", "unfinished capture"),
            (")", "invalid pattern capture"),
            ("[", "malformed pattern (missing ']')"),
            ("a[", "malformed pattern (missing ']')"),
            ("[%", "malformed pattern (missing ']')"),
            ("%", "malformed pattern (ends with '%')"),
            ("%b", "missing arguments to '%b'"),
            ("%fx", "missing '[' after '%f' in pattern"),
            ("%1", "invalid capture index %1"),
            ("(a%1)", "invalid capture index %1"),
        ] {
            assert_eq!(super::check(bad.as_bytes()), Err(why.to_string()), "{bad}");
        }
    }
}
