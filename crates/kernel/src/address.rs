//! Hypernet addresses: `part ("." part)*` with parts of ASCII letters and digits.

/// Why a string is not a valid Hypernet address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Fewer than two dot-separated parts.
    TooShallow,
    /// A part is empty or holds something other than ASCII letters and digits.
    BadPart { index: usize },
    /// Longer than [`ADDRESS_BYTES_MAX`].
    TooLong,
}

/// Longest address accepted, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 256;

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressError::TooShallow => write!(f, "an address has at least two parts, like `2.1`"),
            AddressError::BadPart { index } => write!(
                f,
                "part {} of the address is empty or not made of ASCII letters and digits",
                index + 1
            ),
            AddressError::TooLong => write!(f, "an address is at most {ADDRESS_BYTES_MAX} bytes"),
        }
    }
}

/// Checks the grammar `node ::= part ("." part)*`, `part ::= [A-Za-z0-9]+`, depth >= 2.
pub fn validate_address(address: &str) -> Result<(), AddressError> {
    if address.len() > ADDRESS_BYTES_MAX {
        return Err(AddressError::TooLong);
    }
    let mut depth = 0;
    for (index, part) in address.split('.').enumerate() {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(AddressError::BadPart { index });
        }
        depth += 1;
    }
    if depth < 2 {
        return Err(AddressError::TooShallow);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(address: &str, expected: Result<(), AddressError>) {
        assert_eq!(validate_address(address), expected, "{address}");
    }

    #[test]
    fn grammar() {
        check("2.1", Ok(()));
        check("2.1.loom", Ok(()));
        check("0.7.1.00001", Ok(()));
        check("2", Err(AddressError::TooShallow));
        check("", Err(AddressError::BadPart { index: 0 }));
        check("2..1", Err(AddressError::BadPart { index: 1 }));
        check("2.1.", Err(AddressError::BadPart { index: 2 }));
        check("2.l-oom", Err(AddressError::BadPart { index: 1 }));
        check(&"1.".repeat(200), Err(AddressError::TooLong));
    }
}
