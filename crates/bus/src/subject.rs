//! The routing trie: subscriptions by pattern, matched one token per level.
//! Subject syntax and checks live in [`colony_kernel::subject`].

use std::collections::HashMap;

pub use colony_kernel::subject::{
    check_pattern, check_subject, covers, matches, SubjectError, SUBJECT_BYTES_MAX,
    SUBJECT_TOKENS_MAX,
};

/// A subject cut into its tokens once, on the stack.
#[derive(Clone, Copy, Debug)]
pub struct Tokens<'a> {
    tokens: [&'a str; SUBJECT_TOKENS_MAX],
    count: usize,
}

impl<'a> Tokens<'a> {
    /// `subject`'s tokens; `None` when it has more than a valid subject may
    /// ([`SUBJECT_TOKENS_MAX`]).
    pub fn of(subject: &'a str) -> Option<Tokens<'a>> {
        let mut tokens = [""; SUBJECT_TOKENS_MAX];
        let mut count = 0;
        let mut start = 0;
        // A byte loop: `split` cost twice as much on every publish.
        for (at, byte) in subject.bytes().enumerate() {
            if byte == b'.' {
                *tokens.get_mut(count)? = subject.get(start..at)?;
                count += 1;
                start = at + 1;
            }
        }
        *tokens.get_mut(count)? = subject.get(start..)?;
        Some(Tokens {
            tokens,
            count: count + 1,
        })
    }

    pub fn as_slice(&self) -> &[&'a str] {
        &self.tokens[..self.count]
    }
}

/// Subscriptions by pattern, matched against subjects by walking one trie level per
/// token. Values are compared with `same` on removal.
#[derive(Debug)]
pub struct Trie<T> {
    root: Level<T>,
    len: usize,
}

/// A level's literal tokens: hashed with foldhash (seeded at random per process, as
/// hashbrown's own default), which costs a third of SipHash on a subject's short
/// tokens, walked for every publish.
type Literals<T> = HashMap<Box<str>, Level<T>, foldhash::fast::RandomState>;

#[derive(Debug)]
struct Level<T> {
    literal: Literals<T>,
    star: Option<Box<Level<T>>>,
    /// Patterns ending in `>` here.
    tail: Vec<T>,
    /// Patterns ending exactly here.
    here: Vec<T>,
}

impl<T> Default for Level<T> {
    fn default() -> Self {
        Level {
            literal: Literals::default(),
            star: None,
            tail: Vec::new(),
            here: Vec::new(),
        }
    }
}

impl<T> Level<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.tail.is_empty()
            && self.here.is_empty()
    }
}

impl<T: Clone> Default for Trie<T> {
    fn default() -> Self {
        Trie {
            root: Level::default(),
            len: 0,
        }
    }
}

impl<T: Clone> Trie<T> {
    pub fn new() -> Trie<T> {
        Trie::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under a pattern checked by [`check_pattern`].
    pub fn insert(&mut self, pattern: &str, value: T) {
        let mut level = &mut self.root;
        let tokens: Vec<&str> = pattern.split('.').collect();
        for (index, token) in tokens.iter().enumerate() {
            match *token {
                ">" if index + 1 == tokens.len() => {
                    level.tail.push(value);
                    self.len += 1;
                    return;
                }
                "*" => level = level.star.get_or_insert_with(Default::default),
                literal => level = level.literal.entry(literal.into()).or_default(),
            }
        }
        level.here.push(value);
        self.len += 1;
    }

    /// Removes the first entry under `pattern` for which `same` holds.
    pub fn remove(&mut self, pattern: &str, same: impl Fn(&T) -> bool) -> Option<T> {
        let tokens: Vec<&str> = pattern.split('.').collect();
        let removed = remove_at(&mut self.root, &tokens, &same);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Appends every value whose pattern matches `subject` to `out`.
    pub fn matches(&self, subject: &str, out: &mut Vec<T>) {
        let tokens: Vec<&str> = subject.split('.').collect();
        collect(&self.root, &tokens, out);
    }

    /// Calls `visit` with every value whose pattern matches `subject`, without
    /// collecting them.
    pub fn visit(&self, subject: &str, visit: &mut impl FnMut(&T)) {
        match Tokens::of(subject) {
            Some(tokens) => self.visit_tokens(&tokens, visit),
            None => {
                // Longer than any valid subject: collected the slow way.
                let mut out = Vec::new();
                self.matches(subject, &mut out);
                out.iter().for_each(visit);
            }
        }
    }

    /// [`Trie::visit`] with a subject cut into tokens already (a publish walks two
    /// tries with one cut: the router's and the streams' capture).
    pub fn visit_tokens(&self, tokens: &Tokens, visit: &mut impl FnMut(&T)) {
        visit_level(&self.root, tokens.as_slice(), visit);
    }

    /// Whether any pattern matches `subject` (cheaper than collecting).
    pub fn has_match(&self, subject: &str) -> bool {
        let tokens: Vec<&str> = subject.split('.').collect();
        any(&self.root, &tokens)
    }
}

fn remove_at<T>(level: &mut Level<T>, tokens: &[&str], same: &impl Fn(&T) -> bool) -> Option<T> {
    let take = |list: &mut Vec<T>| list.iter().position(same).map(|i| list.swap_remove(i));
    match tokens {
        [] => take(&mut level.here),
        [">"] => take(&mut level.tail),
        [first, rest @ ..] => {
            if *first == "*" {
                let child = level.star.as_deref_mut()?;
                let removed = remove_at(child, rest, same);
                if child.is_empty() {
                    level.star = None;
                }
                removed
            } else {
                let child = level.literal.get_mut(*first)?;
                let removed = remove_at(child, rest, same);
                if child.is_empty() {
                    level.literal.remove(*first);
                }
                removed
            }
        }
    }
}

fn collect<T: Clone>(level: &Level<T>, tokens: &[&str], out: &mut Vec<T>) {
    match tokens {
        [] => out.extend(level.here.iter().cloned()),
        [first, rest @ ..] => {
            out.extend(level.tail.iter().cloned());
            if let Some(child) = level.literal.get(*first) {
                collect(child, rest, out);
            }
            if let Some(child) = &level.star {
                collect(child, rest, out);
            }
        }
    }
}

fn visit_level<T>(level: &Level<T>, tokens: &[&str], visit: &mut impl FnMut(&T)) {
    match tokens {
        [] => level.here.iter().for_each(&mut *visit),
        [first, rest @ ..] => {
            level.tail.iter().for_each(&mut *visit);
            if let Some(child) = level.literal.get(*first) {
                visit_level(child, rest, visit);
            }
            if let Some(child) = &level.star {
                visit_level(child, rest, visit);
            }
        }
    }
}

fn any<T>(level: &Level<T>, tokens: &[&str]) -> bool {
    match tokens {
        [] => !level.here.is_empty(),
        [first, rest @ ..] => {
            !level.tail.is_empty()
                || level.literal.get(*first).is_some_and(|c| any(c, rest))
                || level.star.as_deref().is_some_and(|c| any(c, rest))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_cut_into_the_tokens_split_gives() {
        for subject in [
            "a",
            "a.b",
            "agents.2.7.inbox",
            "a..b",
            ".a",
            "a.",
            "",
            "é.x",
        ] {
            let tokens = Tokens::of(subject).unwrap();
            assert_eq!(tokens.as_slice(), subject.split('.').collect::<Vec<_>>());
        }
        let most = vec!["t"; SUBJECT_TOKENS_MAX].join(".");
        assert_eq!(
            Tokens::of(&most).unwrap().as_slice().len(),
            SUBJECT_TOKENS_MAX
        );
        assert!(Tokens::of(&format!("{most}.t")).is_none());
    }

    /// (pattern, subject, matches)
    const MATCH_TABLE: &[(&str, &str, bool)] = &[
        ("a.b.c", "a.b.c", true),
        ("a.b.c", "a.b", false),
        ("a.b.c", "a.b.c.d", false),
        ("a.*.c", "a.b.c", true),
        ("a.*.c", "a.b.d", false),
        ("a.*", "a.b", true),
        ("a.*", "a", false),
        ("a.*", "a.b.c", false),
        ("a.>", "a.b", true),
        ("a.>", "a.b.c.d", true),
        ("a.>", "a", false),
        (">", "a", true),
        (">", "a.b.c", true),
        ("*", "a", true),
        ("*", "a.b", false),
        ("*.*", "a.b", true),
        ("*.b.>", "a.b.c", true),
        ("*.b.>", "a.b", false),
        ("*.b.>", "a.c.d", false),
        ("agents.2.7.>", "agents.2.7.inbox", true),
        ("agents.2.7.>", "agents.2.70.inbox", false),
        ("agents.*.*.inbox", "agents.2.7.inbox", true),
        (
            "colony.events.>",
            "colony.events.decision.ledger.reserve",
            true,
        ),
        ("A.b", "a.b", false),
    ];

    #[test]
    fn matching_table() {
        for &(pattern, subject, expected) in MATCH_TABLE {
            assert_eq!(matches(pattern, subject), expected, "{pattern} ~ {subject}");
            let mut trie = Trie::new();
            trie.insert(pattern, 1u32);
            let mut out = Vec::new();
            trie.matches(subject, &mut out);
            assert_eq!(!out.is_empty(), expected, "trie: {pattern} ~ {subject}");
            assert_eq!(
                trie.has_match(subject),
                expected,
                "has_match: {pattern} ~ {subject}"
            );
        }
    }

    #[test]
    fn a_trie_holding_every_pattern_finds_exactly_the_matching_ones() {
        let mut trie = Trie::new();
        let patterns: Vec<&str> = MATCH_TABLE.iter().map(|row| row.0).collect();
        for (index, pattern) in patterns.iter().enumerate() {
            trie.insert(pattern, index);
        }
        let subjects: Vec<&str> = MATCH_TABLE.iter().map(|row| row.1).collect();
        for subject in subjects {
            let mut found = Vec::new();
            trie.matches(subject, &mut found);
            found.sort();
            let expected: Vec<usize> = (0..patterns.len())
                .filter(|&i| matches(patterns[i], subject))
                .collect();
            assert_eq!(found, expected, "{subject}");
        }
    }

    #[test]
    fn removal_prunes_and_keeps_others() {
        let mut trie = Trie::new();
        trie.insert("a.*.c", 1);
        trie.insert("a.*.c", 2);
        trie.insert("a.>", 3);
        assert_eq!(trie.len(), 3);
        assert_eq!(trie.remove("a.*.c", |v| *v == 1), Some(1));
        assert_eq!(trie.remove("a.*.c", |v| *v == 1), None);
        assert_eq!(trie.remove("x.y", |v| *v == 1), None);
        let mut out = Vec::new();
        trie.matches("a.b.c", &mut out);
        out.sort();
        assert_eq!(out, vec![2, 3]);
        trie.remove("a.*.c", |v| *v == 2);
        trie.remove("a.>", |v| *v == 3);
        assert!(trie.is_empty());
        assert!(trie.root.is_empty(), "empty levels are pruned");
    }
}
