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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_sizes_are_rejected_with_their_name() {
        let err = to_usize("n_items", -3).unwrap_err();
        assert_eq!(err.to_string(), "n_items: value -3 does not fit in usize");
        assert_eq!(to_i64("len", 7).ok(), Some(7));
    }
}
