//! Checked conversions between `usize` (Rust lengths) and `i64` (tch sizes).
//!
//! Never write a bare `as` on a value that came from input: use these, which name what overflowed.

use crate::{Error, Result};

/// `usize` → `i64` for tch sizes.
pub fn to_i64(what: &'static str, value: usize) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::DimOverflow { what, value: value.to_string(), target: "i64" })
}

/// `i64` → `usize` (fails on negatives).
pub fn to_usize(what: &'static str, value: i64) -> Result<usize> {
    usize::try_from(value).map_err(|_| Error::DimOverflow { what, value: value.to_string(), target: "usize" })
}

/// A size, count or index libtorch reports (never negative) as `usize`.
///
/// # Panics
/// Only if libtorch broke that invariant; a value from input goes through [`to_usize`] instead.
pub fn as_usize(n: i64) -> usize {
    usize::try_from(n).expect("libtorch sizes and indices are never negative")
}

/// The length of, or an index into, an in-memory collection as libtorch's `i64`.
///
/// # Panics
/// Never on a 64-bit target (lengths are below `isize::MAX`); a value from input goes through [`to_i64`] instead.
pub fn as_i64(i: usize) -> i64 {
    i64::try_from(i).expect("in-memory lengths and indices fit i64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_sizes_are_rejected_with_their_name() {
        let err = to_usize("n_items", -3).unwrap_err();
        assert_eq!(err.to_string(), "n_items: value -3 does not fit in usize");
        assert_eq!(to_i64("len", 7).ok(), Some(7));
        assert_eq!((as_usize(12), as_i64(12)), (12, 12));
    }
}
