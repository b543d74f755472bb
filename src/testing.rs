//! Test helpers shared by unit tests: deterministic mutations of text.

/// A xorshift generator: the same cases on every run and every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

/// `seed` itself, then `count` copies of it with one to `max_edits` edits each: a character
/// deleted, replaced or inserted, the new ones drawn from `alphabet`.
pub fn mutations(
    seed: &str,
    alphabet: &str,
    count: usize,
    max_edits: usize,
    rng: &mut Rng,
) -> Vec<String> {
    let alphabet: Vec<char> = alphabet.chars().collect();
    let mut out = vec![seed.to_string()];
    for _ in 0..count {
        let mut chars: Vec<char> = seed.chars().collect();
        for _ in 0..1 + rng.below(max_edits) {
            let at = rng.below(chars.len() + 1);
            let new = alphabet[rng.below(alphabet.len())];
            match rng.below(3) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 if at < chars.len() => chars[at] = new,
                _ => chars.insert(at, new),
            }
        }
        out.push(chars.into_iter().collect());
    }
    out
}
