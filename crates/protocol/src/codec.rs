//! The one reader and the one writer every message goes through (rustls style).
//!
//! Both are bounds-checked cursors: [`Reader`] hands out fixed-size arrays and big-endian
//! integers and returns `None` when the input runs out; [`Writer`] copies into a caller-owned
//! buffer and returns [`BufferTooSmall`] instead of growing or panicking. Neither allocates.

use crate::BufferTooSmall;

/// A cursor over received bytes. Every read either succeeds completely or returns `None`
/// and leaves the cursor where it was.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// The next `N` bytes as an array reference, without copying.
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        let (head, tail) = self.rest.split_first_chunk::<N>()?;
        self.rest = tail;
        Some(head)
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(|b| u16::from_be_bytes(*b))
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(|b| u32::from_be_bytes(*b))
    }

    #[inline]
    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.array().map(|b| i32::from_be_bytes(*b))
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(|b| u64::from_be_bytes(*b))
    }

    #[inline]
    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.array().map(|b| i64::from_be_bytes(*b))
    }

    /// Everything not read yet; the reader is empty afterwards.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.rest)
    }

    /// Number of bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }
}

/// A cursor over a caller-owned output buffer.
///
/// On [`BufferTooSmall`] the bytes already written stay in the buffer; callers treat the
/// whole buffer as unspecified after an error.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Copies a slice of any length (options, messages).
    #[inline]
    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.len.checked_add(bytes.len()).ok_or(BufferTooSmall)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(BufferTooSmall)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Copies a fixed-size array: one bounds check and a constant-size store, which is what
    /// keeps per-peer and per-row writes cheap.
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self, bytes: [u8; N]) -> Result<(), BufferTooSmall> {
        let slot = self
            .buf
            .get_mut(self.len..)
            .and_then(|rest| rest.first_chunk_mut::<N>())
            .ok_or(BufferTooSmall)?;
        *slot = bytes;
        self.len += N;
        Ok(())
    }

    #[inline]
    pub(crate) fn u16(&mut self, v: u16) -> Result<(), BufferTooSmall> {
        self.array(v.to_be_bytes())
    }

    #[inline]
    pub(crate) fn u32(&mut self, v: u32) -> Result<(), BufferTooSmall> {
        self.array(v.to_be_bytes())
    }

    #[inline]
    pub(crate) fn i32(&mut self, v: i32) -> Result<(), BufferTooSmall> {
        self.array(v.to_be_bytes())
    }

    #[inline]
    pub(crate) fn u64(&mut self, v: u64) -> Result<(), BufferTooSmall> {
        self.array(v.to_be_bytes())
    }

    #[inline]
    pub(crate) fn i64(&mut self, v: i64) -> Result<(), BufferTooSmall> {
        self.array(v.to_be_bytes())
    }

    /// Number of bytes written so far.
    pub(crate) fn finish(self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reads_big_endian_and_stops_at_the_end() {
        let mut r = Reader::new(&[0, 1, 0, 0, 0, 2, 9]);
        assert_eq!(r.u16(), Some(1));
        assert_eq!(r.u32(), Some(2));
        assert_eq!(r.u16(), None, "one byte left is not a u16");
        assert_eq!(r.remaining(), 1, "a failed read consumes nothing");
        assert_eq!(r.rest(), &[9]);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn writer_refuses_to_overrun() {
        let mut buf = [0u8; 5];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.u32(0x0102_0304), Ok(()));
        assert_eq!(w.u16(7), Err(BufferTooSmall));
        assert_eq!(w.bytes(&[5]), Ok(()));
        assert_eq!(w.finish(), 5);
        assert_eq!(buf, [1, 2, 3, 4, 5]);
    }
}
