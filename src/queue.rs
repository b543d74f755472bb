//! A min-queue for items that arrive nearly in order, as event times do.
//!
//! The join's deadlines and the engine's timeline are pushed in almost sorted order: a binary
//! heap pays a sift of `log n` moves on every push and pop for order the input mostly already
//! has. [`MinQueue`] keeps a sorted run instead: an item at most [`REACH`] places from the
//! run's end is inserted there (usually appended), and pops come off its front in O(1); an
//! item further out of order goes to a heap beside it, so the worst case is the heap's.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// How far back from the run's end an item is still inserted into it.
pub const REACH: usize = 16;

/// Pops the smallest item first; equal items come out in an unspecified order.
#[derive(Debug, Clone)]
pub struct MinQueue<T> {
    run: VecDeque<T>,
    rest: BinaryHeap<Reverse<T>>,
}

/// Asks the CPU to bring `item` into its caches without waiting for it: a hint, with no effect
/// on what the program does. Up to the first four cache lines of it, as many as it spans.
#[inline(always)]
pub fn prefetch<T: ?Sized>(item: &T) {
    prefetch_up_to(item, 4)
}

/// [`prefetch`], up to `most` cache lines of `item`: for one whose last lines are read too (an
/// IdP record is 264 bytes, and its time, stage and status are at its end).
#[inline(always)]
pub fn prefetch_up_to<T: ?Sized>(item: &T, most: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const LINE: usize = 64;
        let start = (item as *const T).cast::<u8>();
        let lines = (start as usize % LINE + std::mem::size_of_val(item)).div_ceil(LINE);
        for line in 0..lines.min(most) {
            // SAFETY: a prefetch reads nothing the program sees and cannot fault; the address
            // is in (or on the cache line of) a live value.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line * LINE).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (item, most);
}

impl<T> Default for MinQueue<T> {
    fn default() -> MinQueue<T> {
        MinQueue {
            run: VecDeque::new(),
            rest: BinaryHeap::new(),
        }
    }
}

impl<T: Ord> MinQueue<T> {
    pub fn push(&mut self, item: T) {
        let len = self.run.len();
        let mut at = len;
        while at > 0 && len - at < REACH && self.run[at - 1] > item {
            at -= 1;
        }
        if at == len {
            // In order (nearly every push): `VecDeque::insert` at the end still goes through
            // its general shift (a `wrap_copy` of nothing and a `memmove` call), which was
            // ~110 instructions a push, 0.8% of a replay's instructions.
            self.run.push_back(item);
        } else if at == 0 || self.run[at - 1] <= item {
            self.run.insert(at, item);
        } else {
            self.rest.push(Reverse(item));
        }
    }

    /// The smallest item.
    pub fn peek(&self) -> Option<&T> {
        match (self.run.front(), self.rest.peek()) {
            (Some(a), Some(Reverse(b))) => Some(if b < a { b } else { a }),
            (a, b) => a.or(b.map(|Reverse(b)| b)),
        }
    }

    pub fn pop(&mut self) -> Option<T> {
        let from_rest = match (self.run.front(), self.rest.peek()) {
            (Some(a), Some(Reverse(b))) => b < a,
            (None, Some(_)) => true,
            _ => false,
        };
        if from_rest {
            self.rest.pop().map(|Reverse(item)| item)
        } else {
            self.run.pop_front()
        }
    }

    pub fn len(&self) -> usize {
        self.run.len() + self.rest.len()
    }

    /// The item `n` places from the front of the sorted run: for a look ahead (say, to fetch
    /// what the next pops will need into the cache). The heap's items are not counted, so it
    /// is not always the `n`th item to be popped.
    pub fn ahead(&self, n: usize) -> Option<&T> {
        self.run.get(n)
    }

    pub fn is_empty(&self) -> bool {
        self.run.is_empty() && self.rest.is_empty()
    }

    /// Every item, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.run
            .iter()
            .chain(self.rest.iter().map(|Reverse(item)| item))
    }
}

impl<T: Ord> FromIterator<T> for MinQueue<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> MinQueue<T> {
        let mut queue = MinQueue::default();
        for item in items {
            queue.push(item);
        }
        queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream: mostly ascending with jitter, some far-out-of-order items,
    /// duplicates, and pops interleaved with pushes.
    fn drain_matches_sorting(items: &[i64], pop_every: usize) {
        let mut queue = MinQueue::default();
        let mut reference = BinaryHeap::new();
        for (index, item) in items.iter().enumerate() {
            queue.push(*item);
            reference.push(Reverse(*item));
            assert_eq!(queue.len(), reference.len());
            if pop_every > 0 && index % pop_every == 0 {
                assert_eq!(queue.peek().copied(), reference.peek().map(|r| r.0));
                assert_eq!(queue.pop(), reference.pop().map(|r| r.0));
            }
        }
        while let Some(Reverse(expected)) = reference.pop() {
            assert_eq!(queue.peek(), Some(&expected));
            assert_eq!(queue.pop(), Some(expected));
        }
        assert!(queue.is_empty());
        assert_eq!(queue.pop(), None);
    }

    /// `ahead` looks into the sorted run without taking anything, and not into the heap.
    #[test]
    fn ahead_reads_the_run_in_order_without_popping() {
        let mut queue: MinQueue<i64> = [5, 1, 3, 2].into_iter().collect();
        // 1 went into the run at its front (within reach); all four are in the run.
        assert_eq!(
            (0..5).map(|n| queue.ahead(n).copied()).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3), Some(5), None]
        );
        assert_eq!(queue.len(), 4);
        // An item further back than the run reaches goes to the heap: `ahead` skips it.
        let mut far: MinQueue<i64> = (100..100 + REACH as i64 + 4).collect();
        far.push(0);
        assert_eq!(far.ahead(0), Some(&100));
        assert_eq!(far.pop(), Some(0));
        queue.pop();
        assert_eq!(queue.ahead(0), Some(&2));
    }

    /// A prefetch is a hint on any value, of any size or alignment: nothing changes.
    #[test]
    fn prefetch_takes_any_value() {
        let bytes = vec![7u8; 1 << 20];
        prefetch(&bytes[..]);
        prefetch(&bytes[3..3]);
        prefetch(&bytes[1..130]);
        prefetch(&());
        prefetch("text");
        assert!(bytes.iter().all(|&b| b == 7));
    }

    #[test]
    fn pops_in_order_whatever_the_arrival_order() {
        let mut rng = crate::testing::Rng::new(0x2545_f491_4f6c_dd1d);
        let mut nearly_sorted = Vec::new();
        for i in 0..5_000i64 {
            let r = rng.below(1 << 40) as u64;
            let item = match r % 10 {
                0 => i - (r >> 8) as i64 % 4_000, // far behind: the heap
                1 => i + (r >> 8) as i64 % 4_000, // far ahead: the run's end moves on
                2 => nearly_sorted.last().copied().unwrap_or(0), // a duplicate
                _ => i - (r >> 8) as i64 % 8,     // jitter within reach
            };
            nearly_sorted.push(item);
        }
        for pop_every in [0, 1, 3, 50] {
            drain_matches_sorting(&nearly_sorted, pop_every);
        }
        let descending: Vec<i64> = (0..500).rev().collect();
        drain_matches_sorting(&descending, 0);
        drain_matches_sorting(&descending, 7);
    }

    #[test]
    fn in_order_and_nearly_in_order_items_stay_out_of_the_heap() {
        let mut queue: MinQueue<i64> = (0..100).collect();
        queue.push(90); // within reach: inserted into the run
        queue.push(50); // beyond reach
        assert_eq!((queue.run.len(), queue.rest.len()), (101, 1));
        assert_eq!(queue.iter().count(), 102);
    }
}
