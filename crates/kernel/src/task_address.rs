//! [`TaskAddress`]: where a task lives on the board, and the one place that knows
//! the grammar of it.
//!
//! A root task is `0.7.1.N` (the board's queue address, then the root's number,
//! written with at least five digits); each decomposition adds `.n` (the subtask's
//! number among its siblings, from 1). Addresses are ASCII digits and dots, so a
//! tree's descendants sort right after its root and before anything else: see
//! [`TaskAddress::descendants`].

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::tasks::{TASK_DEPTH_MAX, TASK_QUEUE_ADDRESS};

/// Digits of a root's number or a subtask's number, at most.
const NUMBER_DIGITS_MAX: usize = 19;

/// Longest task address accepted, in bytes: the queue's address, a root's number
/// and [`TASK_DEPTH_MAX`] levels of subtasks.
pub const TASK_ADDRESS_BYTES_MAX: usize =
    TASK_QUEUE_ADDRESS.len() + (1 + NUMBER_DIGITS_MAX) * (1 + TASK_DEPTH_MAX);

/// A task's address, checked: built by the board ([`TaskAddress::root`],
/// [`TaskAddress::child`]) or parsed where one enters ([`TaskAddress::parse`], and
/// when decoded), so a command can never carry anything else.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskAddress(String);

/// Why a string is not a task address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskAddressError {
    /// It does not start with the board's queue address (`0.7.1.`).
    NotOnTheBoard,
    /// A part is empty, not digits, zero, or too long.
    BadNumber { part: usize },
    /// More levels of subtasks than [`TASK_DEPTH_MAX`].
    TooDeep,
}

impl fmt::Display for TaskAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskAddressError::NotOnTheBoard => write!(
                f,
                "a task address starts with {TASK_QUEUE_ADDRESS}. (like {TASK_QUEUE_ADDRESS}.00001)"
            ),
            TaskAddressError::BadNumber { part } => write!(
                f,
                "part {part} of a task address is a number from 1, of at most {NUMBER_DIGITS_MAX} digits"
            ),
            TaskAddressError::TooDeep => write!(
                f,
                "a task address has at most {TASK_DEPTH_MAX} levels of subtasks"
            ),
        }
    }
}

impl std::error::Error for TaskAddressError {}

impl TaskAddress {
    /// The address `text` names, or why it names none.
    pub fn parse(text: &str) -> Result<TaskAddress, TaskAddressError> {
        check(text)?;
        Ok(TaskAddress(text.to_string()))
    }

    /// The root task numbered `number`.
    pub fn root(number: u64) -> TaskAddress {
        TaskAddress(format!("{TASK_QUEUE_ADDRESS}.{number:05}"))
    }

    /// Its subtask numbered `number` (from 1).
    pub fn child(&self, number: u32) -> TaskAddress {
        TaskAddress(format!("{}.{number}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How deep it is in its tree: 0 for a root task, 1 for its subtasks, and so on.
    pub fn level(&self) -> usize {
        self.numbers().count() - 1
    }

    /// The number of the root of its tree.
    pub fn root_number(&self) -> u64 {
        self.numbers()
            .next()
            .and_then(|number| number.parse().ok())
            .expect("checked when made")
    }

    /// The address of the root of its tree (itself for a root).
    pub fn root_address(&self) -> &str {
        let numbers = TASK_QUEUE_ADDRESS.len() + 1;
        let root_len = self.0[numbers..]
            .find('.')
            .map_or(self.0.len(), |at| at + numbers);
        &self.0[..root_len]
    }

    /// The addresses strictly below it sort in `(from, to)`: every descendant starts
    /// with `self.`, and `/` is the byte right after `.`.
    pub fn descendants(address: &str) -> (String, String) {
        (format!("{address}."), format!("{address}/"))
    }

    /// The numbers after the queue's address: the root's, then one per level.
    fn numbers(&self) -> impl Iterator<Item = &str> {
        self.0[TASK_QUEUE_ADDRESS.len() + 1..].split('.')
    }
}

/// The grammar: `0.7.1` `.` root (`.` subtask){0, TASK_DEPTH_MAX}, each a number from
/// 1 of at most [`NUMBER_DIGITS_MAX`] digits (leading zeros allowed: roots have them).
fn check(text: &str) -> Result<(), TaskAddressError> {
    let numbers = text
        .strip_prefix(TASK_QUEUE_ADDRESS)
        .and_then(|rest| rest.strip_prefix('.'))
        .ok_or(TaskAddressError::NotOnTheBoard)?;
    let mut parts = 0;
    for (index, part) in numbers.split('.').enumerate() {
        let digits = !part.is_empty()
            && part.len() <= NUMBER_DIGITS_MAX
            && part.bytes().all(|b| b.is_ascii_digit())
            && part.bytes().any(|b| b != b'0');
        if !digits {
            return Err(TaskAddressError::BadNumber { part: index + 4 });
        }
        parts += 1;
        if parts > 1 + TASK_DEPTH_MAX {
            return Err(TaskAddressError::TooDeep);
        }
    }
    Ok(())
}

impl fmt::Display for TaskAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TaskAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::ops::Deref for TaskAddress {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TaskAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Maps and sets of addresses are looked up with a `&str`.
impl Borrow<str> for TaskAddress {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for TaskAddress {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TaskAddress {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for TaskAddress {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<TaskAddress> for String {
    fn eq(&self, other: &TaskAddress) -> bool {
        *self == other.0
    }
}

impl From<TaskAddress> for String {
    fn from(address: TaskAddress) -> String {
        address.0
    }
}

/// An event's subject.
impl From<&TaskAddress> for String {
    fn from(address: &TaskAddress) -> String {
        address.0.clone()
    }
}

impl std::str::FromStr for TaskAddress {
    type Err = TaskAddressError;

    fn from_str(text: &str) -> Result<TaskAddress, TaskAddressError> {
        TaskAddress::parse(text)
    }
}

/// Encoded as the string it is (a snapshot or a command holds the same bytes as
/// when addresses were strings).
impl Serialize for TaskAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Checked when decoded: a request's path or body, a command read back.
impl<'de> Deserialize<'de> for TaskAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TaskAddress, D::Error> {
        let text = String::deserialize(deserializer)?;
        check(&text).map_err(serde::de::Error::custom)?;
        Ok(TaskAddress(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for good in ["0.7.1.00001", "0.7.1.1", "0.7.1.00012.3.10", "0.7.1.123456"] {
            assert!(TaskAddress::parse(good).is_ok(), "{good}");
        }
        let bad = [
            ("", TaskAddressError::NotOnTheBoard),
            ("2.1", TaskAddressError::NotOnTheBoard),
            ("0.7.1", TaskAddressError::NotOnTheBoard),
            ("0.7.10.1", TaskAddressError::NotOnTheBoard),
            ("0.7.1.", TaskAddressError::BadNumber { part: 4 }),
            ("0.7.1.00000", TaskAddressError::BadNumber { part: 4 }),
            ("0.7.1.1.x", TaskAddressError::BadNumber { part: 5 }),
            ("0.7.1.1..2", TaskAddressError::BadNumber { part: 5 }),
            ("0.7.1.1.0", TaskAddressError::BadNumber { part: 5 }),
            ("0.7.1.-1", TaskAddressError::BadNumber { part: 4 }),
            (
                "0.7.1.99999999999999999999",
                TaskAddressError::BadNumber { part: 4 },
            ),
        ];
        for (text, why) in bad {
            assert_eq!(TaskAddress::parse(text), Err(why), "{text:?}");
        }
        let deepest = format!("0.7.1.1{}", ".1".repeat(TASK_DEPTH_MAX));
        assert!(TaskAddress::parse(&deepest).is_ok());
        assert_eq!(
            TaskAddress::parse(&format!("{deepest}.1")),
            Err(TaskAddressError::TooDeep)
        );
        let longest = format!("0.7.1{}", ".9999999999999999999".repeat(1 + TASK_DEPTH_MAX));
        assert_eq!(longest.len(), TASK_ADDRESS_BYTES_MAX);
        assert!(TaskAddress::parse(&longest).is_ok());
    }

    #[test]
    fn parts_of_an_address() {
        let root = TaskAddress::root(12);
        assert_eq!(root.as_str(), "0.7.1.00012");
        assert_eq!((root.level(), root.root_number()), (0, 12));
        assert_eq!(root.root_address(), "0.7.1.00012");
        let grandchild = root.child(3).child(10);
        assert_eq!(grandchild.as_str(), "0.7.1.00012.3.10");
        assert_eq!((grandchild.level(), grandchild.root_number()), (2, 12));
        assert_eq!(grandchild.root_address(), "0.7.1.00012");
        let (from, to) = TaskAddress::descendants(root.as_str());
        assert!(from.as_str() < grandchild.as_str() && grandchild.as_str() < to.as_str());
        assert!(
            TaskAddress::root(120).as_str() > to.as_str()
                || TaskAddress::root(120).as_str() < from.as_str()
        );
        assert_eq!(TaskAddress::root(123_456).as_str(), "0.7.1.123456");
    }

    #[test]
    fn encoded_as_the_string_and_checked_when_decoded() {
        let address = TaskAddress::root(7).child(2);
        let bytes = postcard::to_stdvec(&address).unwrap();
        assert_eq!(bytes, postcard::to_stdvec("0.7.1.00007.2").unwrap());
        assert_eq!(
            postcard::from_bytes::<TaskAddress>(&bytes).unwrap(),
            address
        );
        let junk = postcard::to_stdvec("2.1").unwrap();
        assert!(postcard::from_bytes::<TaskAddress>(&junk).is_err());
    }
}
