//! Thin glue between `nom`'s byte primitives and the codec's typed errors.
//!
//! Parsers use `nom::number::complete` / `nom::bytes::complete` with the unit error type (a
//! failure there only ever means "not enough bytes"); the call site turns that into the typed
//! error that names the field, with [`Need::need`].

use nom::IResult;

pub(crate) type Res<'a, T> = IResult<&'a [u8], T, ()>;

pub(crate) trait Need<'a, T> {
    /// Maps a nom failure (always truncation here) to the caller's error.
    fn need<E>(self, err: impl FnOnce() -> E) -> Result<(&'a [u8], T), E>;
}

impl<'a, T> Need<'a, T> for Res<'a, T> {
    #[inline]
    fn need<E>(self, err: impl FnOnce() -> E) -> Result<(&'a [u8], T), E> {
        self.map_err(|_| err())
    }
}

pub(crate) use nom::bytes::complete::take;
pub(crate) use nom::number::complete::{be_u8, be_u16, be_u24, be_u32};

/// `take(n)` with a `usize` count.
#[inline]
pub(crate) fn take_n(input: &[u8], n: usize) -> Res<'_, &[u8]> {
    take(n)(input)
}
