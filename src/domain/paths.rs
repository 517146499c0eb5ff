//! Path patterns, as tasks declare and leases reserve them: checking one, and deciding whether
//! two could name the same file — conservatively, since a wrong "no" lets two agents edit it.
//!
//! A pattern is a relative path of `/`-separated segments. In a segment, `*` stands for any run
//! of characters and `?` for one character (neither crosses a `/`); a whole segment `**` stands
//! for any number of segments, none included. A pattern also covers everything below what it
//! names, so `src/auth` reserves the folder and `src/auth/**` is the same reservation. Two
//! patterns overlap when some path is covered by both; [`overlap`] answers with such a path.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use super::InputError;

/// Most patterns a task may declare, or one reservation may hold.
pub const MAX_PATTERNS: usize = 64;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 256;

/// Checks and normalises one pattern (a leading `./` and a trailing `/` are dropped).
pub fn pattern(field: &str, raw: &str) -> Result<String, InputError> {
    let bad = |message: String| Err(InputError::new(field, message));
    let mut p = raw.trim();
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    let p = p.strip_suffix('/').unwrap_or(p);
    if p.is_empty() {
        return bad("a path pattern must not be empty".into());
    }
    if p.len() > MAX_PATTERN_BYTES {
        return bad(format!("longer than {MAX_PATTERN_BYTES} bytes"));
    }
    if p.starts_with('/') {
        return bad(format!(
            "{raw:?} is absolute; patterns are relative to the repository's root"
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| c.is_control() || matches!(c, '\\' | '[' | ']' | '{' | '}'))
    {
        return bad(format!(
            "{raw:?} holds {c:?}: only `*`, `?` and `**` are special; list alternatives as separate patterns"
        ));
    }
    for segment in p.split('/') {
        match segment {
            "" => return bad(format!("{raw:?} has an empty segment (`//`)")),
            "." | ".." => return bad(format!("{raw:?} has a {segment:?} segment")),
            s if s.contains("**") && s != "**" => {
                return bad(format!(
                    "{raw:?}: `**` must be a whole segment, as in `src/**/test.rs`"
                ))
            }
            _ => {}
        }
    }
    Ok(p.to_string())
}

/// Checks a list of patterns (at most [`MAX_PATTERNS`]), dropping repeats; order is kept.
pub fn patterns(field: &str, raw: &[String]) -> Result<Vec<String>, InputError> {
    if raw.len() > MAX_PATTERNS {
        return Err(InputError::new(
            field,
            format!("more than {MAX_PATTERNS} path patterns"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let p = pattern(&format!("{field}[{i}]"), r)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Most pairs of automaton states one overlap check may visit. Beyond it the two patterns are
/// taken to overlap (the safe answer), so no pair of patterns can hold the writer for long.
const BUDGET: usize = 20_000;

/// A path both patterns cover, if there is one; an empty path when they were too intricate to
/// tell apart within the budget (taken to overlap). Patterns are expected checked by [`pattern`].
pub fn overlap(a: &str, b: &str) -> Option<String> {
    // Text before the first wildcard must agree as far as the shorter goes.
    let literal = |p: &str| p.find(['*', '?']).map_or(p.len(), |i| i);
    let (la, lb) = (&a[..literal(a)], &b[..literal(b)]);
    let n = la.len().min(lb.len());
    if la.as_bytes()[..n] != lb.as_bytes()[..n] {
        return None;
    }
    Nfa::of(a).intersect(&Nfa::of(b))
}

/// The first pair of patterns, one from each list, that overlap, with a path both cover.
pub fn first_overlap<'a>(ours: &'a [String], theirs: &'a [String]) -> Option<(&'a str, &'a str, String)> {
    ours.iter().find_map(|a| {
        theirs
            .iter()
            .find_map(|b| overlap(a, b).map(|path| (a.as_str(), b.as_str(), path)))
    })
}

/// What one step of a path may read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// Nothing: a free move.
    Free,
    /// This character.
    Char(char),
    /// Any character but `/`.
    NotSlash,
    /// Any character.
    Any,
}

impl Step {
    /// A character both steps read, if any.
    fn meet(self, other: Step) -> Option<char> {
        match (self, other) {
            (Step::Char(a), Step::Char(b)) => (a == b).then_some(a),
            (Step::Char(c), Step::NotSlash) | (Step::NotSlash, Step::Char(c)) => (c != '/').then_some(c),
            (Step::Char(c), Step::Any) | (Step::Any, Step::Char(c)) => Some(c),
            (Step::Free, _) | (_, Step::Free) => None,
            _ => Some('x'),
        }
    }
}

/// A pattern as a nondeterministic automaton over characters; state 0 starts, `accept` ends.
struct Nfa {
    edges: Vec<Vec<(Step, usize)>>,
    accept: usize,
}

impl Nfa {
    fn state(&mut self) -> usize {
        self.edges.push(Vec::new());
        self.edges.len() - 1
    }

    fn edge(&mut self, from: usize, step: Step, to: usize) {
        self.edges[from].push((step, to));
    }

    /// A new state reached from `from` by `step`.
    fn then(&mut self, from: usize, step: Step) -> usize {
        let to = self.state();
        self.edge(from, step, to);
        to
    }

    /// What a `**` segment stands for, from `at`: `(x+/)*` at the start of a pattern,
    /// `(/x+)*` after a segment (x: any character but `/`). Returns the state after it.
    fn segments(&mut self, at: usize, leading: bool) -> usize {
        let head = self.then(at, Step::Free);
        if leading {
            let name = self.then(head, Step::NotSlash);
            self.edge(name, Step::NotSlash, name);
            self.edge(name, Step::Char('/'), head);
        } else {
            let slash = self.then(head, Step::Char('/'));
            let name = self.then(slash, Step::NotSlash);
            self.edge(name, Step::NotSlash, name);
            self.edge(name, Step::Free, head);
        }
        head
    }

    fn of(pattern: &str) -> Nfa {
        let mut n = Nfa {
            edges: vec![Vec::new()],
            accept: 0,
        };
        let mut at = 0;
        // `**/**` says what `**` says.
        let mut segments: Vec<&str> = pattern.split('/').collect();
        segments.dedup_by(|a, b| *a == "**" && *b == "**");
        if segments == ["**"] {
            let any = n.then(0, Step::NotSlash);
            n.edge(any, Step::Any, any);
            n.accept = any;
            return n;
        }
        let mut slash_taken = false;
        for (k, segment) in segments.iter().enumerate() {
            if *segment == "**" {
                at = n.segments(at, k == 0);
                slash_taken = k == 0;
                continue;
            }
            if k > 0 && !slash_taken {
                at = n.then(at, Step::Char('/'));
            }
            slash_taken = false;
            // A segment is never empty: one made only of `*` needs a character.
            if segment.chars().all(|c| c == '*') {
                at = n.then(at, Step::NotSlash);
            }
            for c in segment.chars() {
                at = match c {
                    '*' => {
                        let star = n.then(at, Step::Free);
                        n.edge(star, Step::NotSlash, star);
                        star
                    }
                    '?' => n.then(at, Step::NotSlash),
                    c => n.then(at, Step::Char(c)),
                };
            }
        }
        // Everything below what it names: `(/.+)?`.
        let end = n.then(at, Step::Free);
        let below = n.then(at, Step::Char('/'));
        let deeper = n.then(below, Step::Any);
        n.edge(deeper, Step::Any, deeper);
        n.edge(deeper, Step::Free, end);
        n.accept = end;
        n
    }

    /// A string both automata accept, found breadth first (so it is a shortest one).
    fn intersect(&self, other: &Nfa) -> Option<String> {
        let width = other.edges.len();
        // For each pair of states reached: the pair it was reached from, and the character read.
        let mut came_from: HashMap<usize, (usize, Option<char>)> = HashMap::from([(0, (usize::MAX, None))]);
        let mut queue = VecDeque::from([0usize]);
        while let Some(here) = queue.pop_front() {
            if came_from.len() > BUDGET {
                return Some(String::new());
            }
            let (a, b) = (here / width, here % width);
            if a == self.accept && b == other.accept {
                return Some(spell(&came_from, here));
            }
            let mut next = Vec::new();
            for &(sa, ta) in &self.edges[a] {
                if sa == Step::Free {
                    next.push((ta * width + b, None));
                }
                for &(sb, tb) in &other.edges[b] {
                    if let Some(c) = sa.meet(sb) {
                        next.push((ta * width + tb, Some(c)));
                    }
                }
            }
            for &(sb, tb) in &other.edges[b] {
                if sb == Step::Free {
                    next.push((a * width + tb, None));
                }
            }
            for (to, c) in next {
                if let Entry::Vacant(slot) = came_from.entry(to) {
                    slot.insert((here, c));
                    queue.push_back(to);
                }
            }
        }
        None
    }
}

/// The characters read on the way to `end`.
fn spell(came_from: &HashMap<usize, (usize, Option<char>)>, mut end: usize) -> String {
    let mut out = Vec::new();
    while let Some(&(from, c)) = came_from.get(&end) {
        if from == usize::MAX {
            break;
        }
        out.extend(c);
        end = from;
    }
    out.into_iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An independent reading of the rules: does `pattern` cover `path`? It covers it when it
    /// names the path or one of the folders above it.
    fn covers(pattern: &str, path: &str) -> bool {
        let pat: Vec<&str> = pattern.split('/').collect();
        let segs: Vec<&str> = path.split('/').collect();
        (1..=segs.len()).any(|k| names(&pat, &segs[..k]))
    }

    fn names(pat: &[&str], segs: &[&str]) -> bool {
        match pat.split_first() {
            None => segs.is_empty(),
            Some((&"**", rest)) => (0..=segs.len()).any(|k| names(rest, &segs[k..])),
            Some((p, rest)) => match segs.split_first() {
                Some((s, more)) => segment(p.as_bytes(), s.as_bytes()) && names(rest, more),
                None => false,
            },
        }
    }

    fn segment(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|k| segment(rest, &s[k..])),
            Some((b'?', rest)) => !s.is_empty() && segment(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && segment(rest, &s[1..]),
        }
    }

    fn valid_path(path: &str) -> bool {
        !path.is_empty() && path.split('/').all(|s| !s.is_empty())
    }

    /// Every path of up to `len` characters over `a`, `b` and `/`.
    fn all_paths(len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut out = Vec::new();
        for _ in 0..len {
            all = all
                .iter()
                .flat_map(|p| ["a", "b", "/"].map(|c| format!("{p}{c}")))
                .collect();
            out.extend(all.iter().filter(|p| valid_path(p)).cloned());
        }
        out
    }

    fn a_pattern() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just("**".to_string()),
            proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("*"), Just("?")], 1..4)
                .prop_map(|parts| parts.concat()),
        ];
        proptest::collection::vec(segment, 1..4).prop_map(|segs| segs.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Never a wrong "no": a path both cover means they overlap.
        #[test]
        fn a_path_both_cover_is_an_overlap(a in a_pattern(), b in a_pattern()) {
            let both = all_paths(7).into_iter().find(|p| covers(&a, p) && covers(&b, p));
            if let Some(path) = both {
                prop_assert!(overlap(&a, &b).is_some(), "{a} and {b} both cover {path}");
            }
        }

        /// Never a wrong "yes": the path given is a real path both cover.
        #[test]
        fn the_path_given_is_covered_by_both(a in a_pattern(), b in a_pattern()) {
            if let Some(path) = overlap(&a, &b) {
                prop_assert!(valid_path(&path), "{a} / {b}: {path:?} is not a path");
                prop_assert!(covers(&a, &path) && covers(&b, &path), "{a} / {b}: {path}");
            }
            prop_assert_eq!(overlap(&a, &b).is_some(), overlap(&b, &a).is_some());
        }
    }

    #[test]
    fn examples() {
        let yes = [
            ("src/auth/**", "src/auth/login.rs"),
            ("src/auth", "src/auth/login.rs"),
            ("src/**/test.rs", "src/a/b/test.rs"),
            ("src/**/test.rs", "src/test.rs"),
            ("**/*.rs", "docs/x.rs"),
            ("src/*.rs", "src/m?in.rs"),
            ("**", "anything/at/all"),
            ("src/a*", "src/*b"),
        ];
        for (a, b) in yes {
            assert!(overlap(a, b).is_some(), "{a} / {b}");
        }
        let no = [
            ("src/auth/**", "src/billing/**"),
            ("src/*.rs", "src/auth/login.rs"),
            ("src/auth", "src/authz"),
            ("*.md", "src/x.md"),
            ("src/a*", "src/b*"),
            ("docs/**/*.md", "src/**"),
        ];
        for (a, b) in no {
            assert_eq!(overlap(a, b), None, "{a} / {b}");
        }
        assert_eq!(
            overlap("src/auth/**", "src/auth/login.rs").as_deref(),
            Some("src/auth/login.rs")
        );
        // Patterns too intricate to tell apart in the budget are taken to overlap.
        let a = format!("{}x", "*a".repeat(120));
        let b = format!("{}y", "*a?".repeat(80));
        assert_eq!(overlap(&a, &b).as_deref(), Some(""));
    }

    #[test]
    fn patterns_are_checked_and_normalised() {
        assert_eq!(pattern("p", "./src/auth/").unwrap(), "src/auth");
        for bad in [
            "",
            "/etc/passwd",
            "src//x",
            "src/../x",
            "a**",
            "src/[ab].rs",
            "{a,b}",
            "a\\b",
            "a\nb",
        ] {
            assert!(pattern("p", bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..65).map(|i| format!("f{i}")).collect();
        assert!(patterns("paths", &many).is_err());
        let repeated = patterns("paths", &["a".into(), "./a".into(), "b".into()]).unwrap();
        assert_eq!(repeated, ["a", "b"]);
    }
}
