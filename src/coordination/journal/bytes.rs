//! The journal's short copies and checks, done in line: an agent's record
//! and the writer's line are a dozen strings of a few bytes each (an id, a
//! recipient, a type, digits), and a call to `memcpy` per string, or a
//! loop a byte at a time, cost more than the rest of the work on them (a
//! profile of the message benchmark put a third of the journal's
//! instructions there).

use std::ptr::copy_nonoverlapping;

/// Copies `src` to `dst` with a few overlapping word moves when it is short
/// (no call to `memcpy`, whose size dispatch costs more than such a copy);
/// a long one with `memcpy`.
///
/// # Safety
///
/// `dst` must be valid for writes of `src.len()` bytes and must not
/// overlap `src`.
#[inline(always)]
pub(super) unsafe fn copy_short(src: &[u8], dst: *mut u8) {
    let n = src.len();
    let s = src.as_ptr();
    // SAFETY: every read below is of bytes `0..n` of `src` and every write of
    // bytes `0..n` from `dst` (the pairs overlap in the middle when `n` is
    // less than twice their size), which the caller vouches for.
    unsafe {
        if n > 64 {
            copy_nonoverlapping(s, dst, n);
        } else if n > 32 {
            // A line's host and agent, typically.
            let a = s.cast::<[u128; 2]>().read_unaligned();
            let b = s.add(n - 32).cast::<[u128; 2]>().read_unaligned();
            dst.cast::<[u128; 2]>().write_unaligned(a);
            dst.add(n - 32).cast::<[u128; 2]>().write_unaligned(b);
        } else if n >= 16 {
            let a = s.cast::<u128>().read_unaligned();
            let b = s.add(n - 16).cast::<u128>().read_unaligned();
            dst.cast::<u128>().write_unaligned(a);
            dst.add(n - 16).cast::<u128>().write_unaligned(b);
        } else if n >= 8 {
            let a = s.cast::<u64>().read_unaligned();
            let b = s.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let a = s.cast::<u32>().read_unaligned();
            let b = s.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else if n > 0 {
            // One to three bytes: the first, the middle and the last are all.
            let (a, m, z) = (*s, *s.add(n / 2), *s.add(n - 1));
            *dst = a;
            *dst.add(n / 2) = m;
            *dst.add(n - 1) = z;
        }
    }
}

/// Appends `s` to `out` (see [`copy_short`]).
#[inline(always)]
pub(super) fn put(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len());
    let len = out.len();
    // SAFETY: `reserve` made room for `s.len()` bytes past `len`, which
    // `copy_short` writes before the length grows over them; `s` is
    // borrowed apart from `out`, so they cannot overlap.
    unsafe {
        copy_short(s, out.as_mut_ptr().add(len));
        out.set_len(len + s.len());
    }
}

/// Appends `s` between double quotes to `out`: `s` as a JSON string when
/// nothing in it needs escaping (see [`needs_escape`]).
#[inline(always)]
pub(super) fn put_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    let len = out.len();
    // SAFETY: as in `put`, for the `s.len() + 2` bytes reserved: a quote,
    // `s`, a quote.
    unsafe {
        let p = out.as_mut_ptr().add(len);
        *p = b'"';
        copy_short(s, p.add(1));
        *p.add(1 + s.len()) = b'"';
        out.set_len(len + s.len() + 2);
    }
}

/// True when a byte of `s` must be escaped in a JSON string: a control
/// character, `"` or `\`. Sixteen bytes at a time with SSE2 (part of every
/// x86_64) when there are that many; else a word at a time with the classic
/// bit tricks (the expressions in [`escapes`] set a byte's high bit when it
/// is below `n`, or equal to `c`, and none otherwise), as two overlapping
/// words up to 16 bytes. The writer checks every record's strings with it:
/// a word at a time, those of a message (an id, a name, a type: some 20
/// bytes) cost it about 100 instructions.
#[inline]
pub(super) fn needs_escape(s: &[u8]) -> bool {
    let n = s.len();
    #[cfg(target_arch = "x86_64")]
    if n >= 16 {
        return needs_escape_sse2(s);
    }
    if n >= 8 {
        let mut found = 0;
        let mut at = 0;
        while at + 16 < n {
            found |= escapes(word(s, at)) | escapes(word(s, at + 8));
            at += 16;
        }
        // At most 16 bytes are left, from `at`: the word there (or the last
        // one, when fewer than 8 are) and the last word cover them.
        found |= escapes(word(s, at.min(n - 8))) | escapes(word(s, n - 8));
        found != 0
    } else if n >= 4 {
        let half = |at: usize| u32::from_ne_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]);
        escapes(u64::from(half(0)) | u64::from(half(n - 4)) << 32) != 0
    } else {
        s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
    }
}

/// [`needs_escape`] of at least 16 bytes: 16 at a time, the last 16
/// overlapping the ones before.
#[cfg(target_arch = "x86_64")]
#[inline]
fn needs_escape_sse2(s: &[u8]) -> bool {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let n = s.len();
    debug_assert!(n >= 16);
    // SAFETY: SSE2 is part of the x86_64 baseline; every load is of 16
    // bytes from `at <= n - 16`, within `s`.
    unsafe {
        let (space, quote, backslash) = (
            _mm_set1_epi8(0x1f),
            _mm_set1_epi8(b'"' as i8),
            _mm_set1_epi8(b'\\' as i8),
        );
        let check = |at: usize| {
            let x = _mm_loadu_si128(s.as_ptr().add(at).cast::<__m128i>());
            // Unsigned `x <= 0x1f` is `min(x, 0x1f) == x`.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(x, space), x);
            let special = _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash));
            _mm_movemask_epi8(_mm_or_si128(control, special))
        };
        let mut found = 0;
        let mut at = 0;
        while at + 16 < n {
            found |= check(at);
            at += 16;
        }
        found |= check(n - 16);
        found != 0
    }
}

/// The eight bytes of `s` from `at`.
#[inline(always)]
fn word(s: &[u8], at: usize) -> u64 {
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&s[at..at + 8]);
    u64::from_ne_bytes(eight)
}

/// A word whose bytes have their high bit set where a byte of `x` must be
/// escaped (and possibly beside one that must: only zero means none).
#[inline(always)]
fn escapes(x: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = ONES << 7;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    let equal = |x: u64, c: u8| below(x ^ (ONES * u64::from(c)), 1);
    below(x, 0x20) | equal(x, b'"') | equal(x, b'\\')
}

#[cfg(test)]
mod tests {
    use super::{needs_escape, put};

    /// Every byte that needs escaping is found wherever it stands, and no
    /// other byte is taken for one.
    #[test]
    fn needs_escape_finds_exactly_the_bytes_json_escapes() {
        for len in [
            1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 47, 48, 49, 64,
        ] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    let escaped = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(needs_escape(&s), escaped, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(!needs_escape(b""));
        assert!(!needs_escape("é…\u{7f}\u{10ffff}".as_bytes()));
    }

    /// Strings of every length up to past the longest done in line are
    /// appended whole, after what was there.
    #[test]
    fn put_appends_every_byte() {
        for len in 0..140 {
            let s: Vec<u8> = (0..len as u8)
                .map(|i| i.wrapping_mul(7).wrapping_add(1))
                .collect();
            let mut out = b"ab".to_vec();
            put(&mut out, &s);
            assert_eq!(&out[..2], b"ab");
            assert_eq!(&out[2..], &s[..], "{len}");
        }
    }
}
