//! Bus subjects and patterns (the node's routing trie matches them the same way).
//!
//! A subject is dot-separated tokens (`agents.2.7.inbox`). A pattern may also use
//! `*` for exactly one token and `>` (last token only) for one or more tokens, as in
//! NATS. Tokens are 1..=64 bytes of letters, digits and `-_:@+=~%$`; a subject has at
//! most [`SUBJECT_TOKENS_MAX`] tokens and [`SUBJECT_BYTES_MAX`] bytes.

pub const SUBJECT_BYTES_MAX: usize = 256;
pub const SUBJECT_TOKENS_MAX: usize = 16;

/// Why a subject or pattern is not valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectError {
    Empty,
    TooLong,
    TooManyTokens,
    EmptyToken,
    BadToken(String),
    WildcardInPublish,
    MisplacedTail,
}

impl std::fmt::Display for SubjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubjectError::Empty => write!(f, "a subject cannot be empty"),
            SubjectError::TooLong => write!(f, "a subject has at most {SUBJECT_BYTES_MAX} bytes"),
            SubjectError::TooManyTokens => {
                write!(f, "a subject has at most {SUBJECT_TOKENS_MAX} tokens")
            }
            SubjectError::EmptyToken => write!(f, "empty token (two dots, or a dot at an end)"),
            SubjectError::BadToken(token) => write!(
                f,
                "token {token:?} has a character other than letters, digits and -_:@+=~%$"
            ),
            SubjectError::WildcardInPublish => write!(
                f,
                "wildcards (* and >) are for subscriptions, not for publishing"
            ),
            SubjectError::MisplacedTail => write!(f, "`>` may only be the last token"),
        }
    }
}

impl std::error::Error for SubjectError {}

/// The bytes a token may hold, by byte value.
const TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'_' | b':' | b'@' | b'+' | b'=' | b'~' | b'%' | b'$'
            );
        b += 1;
    }
    table
};

/// Whether `text` is a plain subject (no wildcard): one pass over its bytes, the
/// check every publish makes. `false` sends it to [`check`], which says what is wrong
/// (or finds a pattern's wildcards in order).
fn plain_subject(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() > SUBJECT_BYTES_MAX {
        return false;
    }
    let (mut tokens, mut token_len) = (1, 0);
    for &b in bytes {
        if b == b'.' {
            if token_len == 0 {
                return false;
            }
            tokens += 1;
            token_len = 0;
        } else if TOKEN_BYTES[b as usize] {
            token_len += 1;
            if token_len > 64 {
                return false;
            }
        } else {
            return false;
        }
    }
    token_len > 0 && tokens <= SUBJECT_TOKENS_MAX
}

fn check(text: &str, wildcards: bool) -> Result<(), SubjectError> {
    if plain_subject(text) {
        return Ok(());
    }
    if text.is_empty() {
        return Err(SubjectError::Empty);
    }
    if text.len() > SUBJECT_BYTES_MAX {
        return Err(SubjectError::TooLong);
    }
    let count = text.split('.').count();
    if count > SUBJECT_TOKENS_MAX {
        return Err(SubjectError::TooManyTokens);
    }
    for (index, token) in text.split('.').enumerate() {
        match token {
            "" => return Err(SubjectError::EmptyToken),
            "*" | ">" if !wildcards => return Err(SubjectError::WildcardInPublish),
            "*" => {}
            ">" if index + 1 == count => {}
            ">" => return Err(SubjectError::MisplacedTail),
            _ => {
                if token.len() > 64 || !token.bytes().all(|b| TOKEN_BYTES[b as usize]) {
                    return Err(SubjectError::BadToken(token.chars().take(70).collect()));
                }
            }
        }
    }
    Ok(())
}

/// Checks a subject to publish to (no wildcards).
pub fn check_subject(subject: &str) -> Result<(), SubjectError> {
    check(subject, false)
}

/// Checks a subscription pattern.
pub fn check_pattern(pattern: &str) -> Result<(), SubjectError> {
    check(pattern, true)
}

/// Whether `pattern` matches the (wildcard-free) `subject`.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match token {
            ">" => return subject_tokens.next().is_some(),
            "*" => {
                if subject_tokens.next().is_none() {
                    return false;
                }
            }
            literal => {
                if subject_tokens.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    subject_tokens.next().is_none()
}

/// Whether every subject `inner` matches is also matched by `outer`: the check a
/// subscription pattern passes against the patterns a principal is allowed.
pub fn covers(outer: &str, inner: &str) -> bool {
    let mut inner_tokens = inner.split('.');
    for token in outer.split('.') {
        let Some(other) = inner_tokens.next() else {
            return false;
        };
        match (token, other) {
            (">", _) => return true,
            ("*", ">") => return false,
            ("*", _) => {}
            (literal, other) if literal == other => {}
            _ => return false,
        }
    }
    inner_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass check accepts only what the token-by-token check accepts.
    #[test]
    fn the_fast_path_agrees_with_the_full_check() {
        let long_token = "a".repeat(65);
        let many = vec!["a"; 17].join(".");
        let longest = vec!["a"; 16].join(".");
        let cases = [
            "a",
            "a.b",
            "agents.2.7.inbox",
            "a..b",
            ".a",
            "a.",
            "",
            "a.*",
            "a.>",
            "*",
            "a b",
            "a\"b",
            "é.a",
            "x-y_z:@+=~%$",
            long_token.as_str(),
            many.as_str(),
            longest.as_str(),
        ];
        for case in cases {
            let full = |wildcards| {
                // The token-by-token check alone (what `check` does past the fast path).
                let count = case.split('.').count();
                !case.is_empty()
                    && case.len() <= SUBJECT_BYTES_MAX
                    && count <= SUBJECT_TOKENS_MAX
                    && case.split('.').enumerate().all(|(i, t)| match t {
                        "" => false,
                        "*" => wildcards,
                        ">" => wildcards && i + 1 == count,
                        _ => t.len() <= 64 && t.bytes().all(|b| TOKEN_BYTES[b as usize]),
                    })
            };
            if plain_subject(case) {
                assert!(full(false) && full(true), "{case:?}");
            }
            assert_eq!(check(case, false).is_ok(), full(false), "{case:?}");
            assert_eq!(check(case, true).is_ok(), full(true), "{case:?}");
        }
    }

    #[test]
    fn validation_table() {
        let table: &[(&str, bool, Option<SubjectError>)] = &[
            ("a.b", false, None),
            ("a.*", true, None),
            ("a.>", true, None),
            ("a.*", false, Some(SubjectError::WildcardInPublish)),
            ("", true, Some(SubjectError::Empty)),
            ("a..b", true, Some(SubjectError::EmptyToken)),
            (".a", true, Some(SubjectError::EmptyToken)),
            ("a.", true, Some(SubjectError::EmptyToken)),
            ("a.>.b", true, Some(SubjectError::MisplacedTail)),
            ("a b", true, Some(SubjectError::BadToken("a b".into()))),
            ("a.b*", true, Some(SubjectError::BadToken("b*".into()))),
        ];
        for (text, wildcards, expected) in table {
            assert_eq!(check(text, *wildcards).err(), *expected, "{text:?}");
        }
        assert_eq!(check(&"a".repeat(300), false), Err(SubjectError::TooLong));
        assert_eq!(
            check(&vec!["a"; 17].join("."), false),
            Err(SubjectError::TooManyTokens)
        );
    }

    #[test]
    fn coverage_table() {
        let table: &[(&str, &str, bool)] = &[
            (">", "a.b", true),
            (">", ">", true),
            ("a.>", "a.b.>", true),
            ("a.>", "a", false),
            ("a.>", ">", false),
            ("a.*", "a.b", true),
            ("a.*", "a.*", true),
            ("a.*", "a.>", false),
            ("a.b", "a.*", false),
            ("agents.2.7.>", "agents.2.7.inbox", true),
            ("agents.2.7.>", "agents.*.7.inbox", false),
        ];
        for &(outer, inner, expected) in table {
            assert_eq!(covers(outer, inner), expected, "{outer} covers {inner}");
        }
    }
}
