//! Word-at-a-time byte searches ("SIMD within a register"): eight bytes of a slice read as
//! one little-endian `u64` and tested at once, for the short texts every line carries.

/// A byte of 1 in every lane.
pub const ONES: u64 = u64::from_ne_bytes([1; 8]);
/// The top bit of every lane: where the tests below flag a byte.
pub const HIGH: u64 = ONES << 7;

/// The bytes of a little-endian word equal to `byte`, flagged in their top bit once masked
/// with [`HIGH`], and some bytes above the first of them (a borrow only runs upward): the
/// lowest flag is the first.
pub fn flags_of(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x
}

/// The eight bytes of `bytes` at `at` as a word, padded with zeros past the end (so a
/// search must not look for a zero byte).
///
/// A tail of under eight bytes is read as two overlapping loads (of 4, or of 1 and 2 bytes)
/// and put together in a register: copying it into a zeroed array on the stack instead cost a
/// `memcpy` call and a stalled load of the word it had just written in parts, ~2% of a
/// replay's samples (the case-folding of keys every line takes).
pub fn word_at(bytes: &[u8], at: usize) -> u64 {
    if let Some(chunk) = bytes.get(at..at + 8) {
        full_word(chunk, 0)
    } else {
        let rest = bytes.get(at..).unwrap_or_default();
        let n = rest.len();
        let u32_at =
            |i: usize| u64::from(u32::from_le_bytes(rest[i..i + 4].try_into().expect("4")));
        let u16_at =
            |i: usize| u64::from(u16::from_le_bytes(rest[i..i + 2].try_into().expect("2")));
        match n {
            4..=7 => u32_at(0) | u32_at(n - 4) << (8 * (n - 4)),
            2 | 3 => u64::from(rest[0]) | u16_at(n - 2) << (8 * (n - 2)),
            1 => u64::from(rest[0]),
            _ => 0,
        }
    }
}

/// The eight bytes of `bytes` at `at`, all there, as a word.
fn full_word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

/// The bytes `A`–`Z` of a word of ASCII bytes, flagged in their top bit: for a byte below
/// 0x80, adding 0x3F sets its top bit from `A` up, and adding 0x25 from past `Z` up, with no
/// carry into the next byte.
fn ascii_uppercase_flags(word: u64) -> u64 {
    word.wrapping_add(ONES * 0x3F) & !word.wrapping_add(ONES * 0x25) & HIGH
}

/// [`ascii_uppercase_flags`] of any word: tested on the low seven bits, a byte of 0x80 and up
/// never flagged.
fn uppercase_flags(word: u64) -> u64 {
    ascii_uppercase_flags(word & !HIGH) & !word
}

/// Whether `bytes` hold any of the four (non-zero) bytes of `set`, eight at a time. A false
/// flag only ever sits above a true one, so any flag is a find.
pub fn has_any_of(bytes: &[u8], set: [u8; 4]) -> bool {
    (0..bytes.len()).step_by(8).any(|at| {
        let word = word_at(bytes, at);
        (flags_of(word, set[0])
            | flags_of(word, set[1])
            | flags_of(word, set[2])
            | flags_of(word, set[3]))
            & HIGH
            != 0
    })
}

/// Whether ASCII `bytes` hold an uppercase letter.
pub fn has_ascii_uppercase(bytes: &[u8]) -> bool {
    (0..bytes.len())
        .step_by(8)
        .any(|at| ascii_uppercase_flags(word_at(bytes, at)) != 0)
}

/// `a == b`, comparing texts of 4 to 16 bytes (a JSON member's name with its quotes and
/// colon) as two overlapping words each, inline, where slice equality calls `memcmp`.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    fn word<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
        bytes[at..at + N].try_into().expect("N bytes")
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        8..=16 => {
            let same = |at| u64::from_ne_bytes(word(a, at)) == u64::from_ne_bytes(word(b, at));
            same(0) && same(n - 8)
        }
        4..=7 => {
            let same = |at| u32::from_ne_bytes(word(a, at)) == u32::from_ne_bytes(word(b, at));
            same(0) && same(n - 4)
        }
        _ => a == b,
    }
}

/// `a == b` ignoring ASCII case, exactly as `<[u8]>::eq_ignore_ascii_case` compares (which
/// goes a byte at a time): eight bytes at a time, each word lowercased in a register. The
/// high-risk policy compares every operation's login with its patterns this way.
pub fn eq_ignore_ascii_case(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.eq_ignore_ascii_case(b);
    }
    let same = |at: usize| lowercase(full_word(a, at)) == lowercase(full_word(b, at));
    let mut at = 0;
    while at + 8 <= n {
        if !same(at) {
            return false;
        }
        at += 8;
    }
    same(n - 8)
}

/// The word with each byte `A`–`Z` made lowercase (0x20 added), every other byte as it was.
fn lowercase(word: u64) -> u64 {
    word | (uppercase_flags(word) >> 2)
}

/// `bytes` as text, exactly as `std::str::from_utf8` reads them (the same error for the same
/// bytes). Nearly every log line is ASCII, which is valid UTF-8 as it is: that is checked 32
/// bytes at a time (four words ORed together, one test of their top bits), and only a line
/// holding a byte of 0x80 or more is handed to the standard validation. The standard
/// validation's own ASCII path tests 16 bytes at a time and was ~1.4% of a replay's
/// instructions (callgrind, 1M set).
pub fn text_of(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if is_ascii(bytes) {
        // SAFETY: every byte is below 0x80, and ASCII text is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes)
}

/// Whether every byte is below 0x80: 64 bytes at a time (eight words ORed together, which
/// the compiler turns into four SSE2 loads and ORs), then 32, then a word at a time, then the
/// last eight bytes as one word (overlapping what was tested already).
pub fn is_ascii(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n < 8 {
        return word_at(bytes, 0) & HIGH == 0;
    }
    let word = |at: usize| full_word(bytes, at);
    let mut at = 0;
    while let Some(block) = bytes.get(at..at + 64) {
        let any = (0..8).fold(0, |any, i| any | full_word(block, i * 8));
        if any & HIGH != 0 {
            return false;
        }
        at += 64;
    }
    if at + 32 <= n {
        if (word(at) | word(at + 8) | word(at + 16) | word(at + 24)) & HIGH != 0 {
            return false;
        }
        at += 32;
    }
    while at + 8 <= n {
        if word(at) & HIGH != 0 {
            return false;
        }
        at += 8;
    }
    word(n - 8) & HIGH == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_any_of_agrees_with_a_byte_by_byte_search_at_every_length_and_offset() {
        let set = [b'=', b':', b' ', b'J'];
        for len in 0..=20 {
            for at in 0..len {
                for byte in [b'=', b':', b' ', b'J', b'j', b'a', 0x80, b'<', b'\xff'] {
                    let mut text = vec![b'x'; len];
                    text[at] = byte;
                    assert_eq!(
                        has_any_of(&text, set),
                        text.iter().any(|b| set.contains(b)),
                        "{len} {at} {byte}"
                    );
                }
            }
            assert!(!has_any_of(&vec![b'5'; len], set));
        }
    }

    #[test]
    fn same_bytes_agrees_with_slice_equality_for_a_difference_at_every_offset() {
        for len in 0..24 {
            let a: Vec<u8> = (0..len as u8).map(|i| b'a' + i).collect();
            assert!(same_bytes(&a, &a.clone()), "{len}");
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same_bytes(&a, &b), "{len}, differing at {at}");
            }
            assert!(!same_bytes(&a, &a[..len.saturating_sub(1)]) || len == 0);
        }
    }

    #[test]
    fn a_word_is_the_eight_bytes_at_an_offset_padded_with_zeros() {
        let bytes: Vec<u8> = (1..=20).map(|i| i * 11).collect();
        for len in 0..=bytes.len() {
            for at in 0..=len + 1 {
                let mut padded = [0u8; 8];
                for (i, byte) in bytes[..len].iter().skip(at).take(8).enumerate() {
                    padded[i] = *byte;
                }
                assert_eq!(
                    word_at(&bytes[..len], at),
                    u64::from_le_bytes(padded),
                    "{at} of {len}"
                );
            }
        }
    }

    #[test]
    fn uppercase_is_found_as_a_byte_search_finds_it_at_every_offset() {
        for len in 0..20 {
            for at in 0..len {
                for byte in 0..0x80u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    assert_eq!(
                        has_ascii_uppercase(&bytes),
                        bytes.iter().any(u8::is_ascii_uppercase),
                        "{byte:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn text_of_reads_bytes_as_from_utf8_does_with_a_high_byte_at_every_offset() {
        for len in 0..140 {
            let ascii: Vec<u8> = (0..len).map(|i| b' ' + (i % 90) as u8).collect();
            assert!(is_ascii(&ascii), "{len}");
            assert_eq!(text_of(&ascii), std::str::from_utf8(&ascii), "{len}");
            for at in 0..len {
                // 0x80 alone is invalid; "é" (two bytes) is valid; both are not ASCII.
                for high in [&[0x80u8][..], "é".as_bytes(), &[0xFF]] {
                    let mut bytes = ascii.clone();
                    bytes.splice(at..at + 1, high.iter().copied());
                    assert!(!is_ascii(&bytes), "{high:?} at {at} of {len}");
                    assert_eq!(
                        text_of(&bytes),
                        std::str::from_utf8(&bytes),
                        "{high:?} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn eq_ignore_ascii_case_agrees_with_the_standard_one_byte_by_byte() {
        // Every byte value against its neighbours in case and in code, at every offset of
        // every length to 24.
        let mut checked = 0;
        for len in 1..=24 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut a: Vec<u8> = (0..len).map(|i| b"Ab@[`{zZ"[i % 8]).collect();
                    a[at] = byte;
                    for other in [
                        byte,
                        byte ^ 0x20,
                        byte.wrapping_add(1),
                        byte.to_ascii_lowercase(),
                        byte.to_ascii_uppercase(),
                        byte ^ 0x80,
                    ] {
                        let mut b = a.clone();
                        b[at] = other;
                        for b in [b.clone(), b.iter().map(u8::to_ascii_uppercase).collect()] {
                            assert_eq!(
                                eq_ignore_ascii_case(&a, &b),
                                a.eq_ignore_ascii_case(&b),
                                "{a:?} {b:?}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000);
        assert!(!eq_ignore_ascii_case(b"abcdefgh", b"abcdefg"));
    }
}
