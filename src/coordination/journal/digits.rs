//! Decimal digits of the two numbers every journal line starts with,
//! written without dividing them down each time: a line's sequence number
//! is the last one plus one (its digits are counted up in place), and its
//! time (microseconds since the epoch, 16 digits) shares its seconds with
//! the lines around it (only the six digits of microseconds are new).
//! `itoa` for both was the writer's largest single cost in a profile of a
//! blackboard loop with the journal on.

use super::bytes::put;

/// Two-digit pairs `00` to `99`.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The digits of a number that usually grows by one.
#[derive(Debug)]
pub(super) struct Counter {
    /// The number `digits[start..]` spells.
    value: u64,
    digits: [u8; 20],
    start: usize,
}

impl Default for Counter {
    fn default() -> Counter {
        // "0"
        Counter {
            value: 0,
            digits: [b'0'; 20],
            start: 19,
        }
    }
}

impl Counter {
    /// The digits of `n`.
    #[inline(always)]
    pub(super) fn digits(&mut self, n: u64) -> &[u8] {
        if n != self.value {
            // The usual step: one more, without a carry.
            if n.checked_sub(self.value) == Some(1) && self.digits[19] != b'9' {
                self.digits[19] += 1;
                self.value = n;
            } else {
                self.renew(n);
            }
        }
        &self.digits[self.start..]
    }

    /// Spells `n`: one more with a carry, or any other number.
    #[cold]
    fn renew(&mut self, n: u64) {
        if self.value.checked_add(1) == Some(n) {
            self.count_up();
        } else {
            let mut buf = itoa::Buffer::new();
            let s = buf.format(n).as_bytes();
            self.start = 20 - s.len();
            self.digits[self.start..].copy_from_slice(s);
        }
        self.value = n;
    }

    /// Adds one to the digits: nines at the end become zeros and carry.
    fn count_up(&mut self) {
        let mut i = 20;
        while i > self.start {
            i -= 1;
            if self.digits[i] == b'9' {
                self.digits[i] = b'0';
            } else {
                self.digits[i] += 1;
                return;
            }
        }
        // All nines: one digit more (a u64 has at most 20, and `value + 1`
        // did not overflow, so there is room).
        self.start -= 1;
        self.digits[self.start] = b'1';
    }
}

/// The digits of a time in microseconds, its seconds kept between calls.
#[derive(Debug, Default)]
pub(super) struct Micros {
    seconds: Counter,
}

impl Micros {
    /// Appends the digits of `us` to `out`.
    #[inline(always)]
    pub(super) fn write(&mut self, out: &mut Vec<u8>, us: u64) {
        if us < 1_000_000 {
            put(out, itoa::Buffer::new().format(us).as_bytes());
            return;
        }
        let (seconds, micros) = self.split(us);
        put(out, seconds);
        out.extend_from_slice(&micros);
    }

    /// The digits of `us`, at least a second: those of its seconds, then
    /// the six of its microseconds.
    #[inline(always)]
    pub(super) fn split(&mut self, us: u64) -> (&[u8], [u8; 6]) {
        let (seconds, micros) = (us / 1_000_000, (us % 1_000_000) as usize);
        let pair = |n: usize| [PAIRS[2 * n], PAIRS[2 * n + 1]];
        let [a, b] = pair(micros / 10_000);
        let [c, d] = pair(micros / 100 % 100);
        let [e, f] = pair(micros % 100);
        (self.seconds.digits(seconds), [a, b, c, d, e, f])
    }
}

#[cfg(test)]
mod tests {
    use super::{Counter, Micros};

    /// The digits are those of the number, counted up across a carry into
    /// a new digit, and after any jump.
    #[test]
    fn counter_digits_are_the_numbers() {
        let mut c = Counter::default();
        let numbers =
            (0..1200)
                .chain(99_990..100_010)
                .chain([7, 7, 8, u64::MAX - 1, u64::MAX, 0, 1]);
        for n in numbers {
            assert_eq!(c.digits(n), n.to_string().as_bytes(), "{n}");
        }
    }

    #[test]
    fn micros_are_the_numbers() {
        let mut m = Micros::default();
        for us in [
            0,
            5,
            999_999,
            1_000_000,
            1_000_001,
            1_796_206_332_678_909,
            1_796_206_332_678_910,
            1_796_206_332_000_001,
            1_796_206_333_000_000,
            1_796_206_332_999_999,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            m.write(&mut out, us);
            assert_eq!(out, us.to_string().as_bytes(), "{us}");
        }
    }
}
