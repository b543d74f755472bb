//! What the gateway taught the join about users: (app, resource id) → userName, and back.
//!
//! A write that shows both a resource id (`/Users/{id}`) and a userName (its body) teaches
//! the pair, so a later write that carries only the id, or an IdP operation that carries only
//! the login, can still be matched. The directory grows with users × apps, not with time, but
//! nothing in a log bounds it: past its cap the pair learned first is forgotten first (a
//! user still active is learned again at their next such write).

use crate::model::FastMap;
use hashbrown::HashTable;
use std::collections::VecDeque;

/// The learned pairs, oldest first, each once: an app interned, the id and the name boxed,
/// and the two ways in as hash tables of sequence numbers (~150 bytes a pair where two maps
/// of `String` tuples and an order queue took ~600).
#[derive(Debug, Default)]
pub struct Directory {
    apps: Vec<Box<str>>,
    app_index: FastMap<Box<str>, u32>,
    /// Pair `seq` is `pairs[seq - first]`.
    pairs: VecDeque<Pair>,
    first: u64,
    /// Sequence numbers by (app, id), and by (app, name).
    by_id: HashTable<u64>,
    by_name: HashTable<u64>,
    hasher: ahash::RandomState,
}

#[derive(Debug)]
struct Pair {
    app: u32,
    id: Box<str>,
    name: Box<str>,
}

impl Directory {
    /// Learns that `id` in `app` is the user `name` (already case-folded). A pair already
    /// known keeps its place; an id that now names someone else is moved to them, and the
    /// name it had is handed back (a rename).
    pub fn learn(&mut self, app: &str, id: &str, name: &str) -> Option<Box<str>> {
        let app = self.intern(app);
        let id_hash = self.hasher.hash_one((app, id));
        let (pairs, first) = (&self.pairs, self.first);
        let known = self.by_id.find(id_hash, |&seq| {
            let pair = &pairs[(seq - first) as usize];
            pair.app == app && *pair.id == *id
        });
        if let Some(&seq) = known {
            let index = (seq - first) as usize;
            if *self.pairs[index].name == *name {
                return None;
            }
            let old_hash = self.hasher.hash_one((app, &*self.pairs[index].name));
            if let Ok(entry) = self.by_name.find_entry(old_hash, |&s| s == seq) {
                entry.remove();
            }
            let previous = std::mem::replace(&mut self.pairs[index].name, name.into());
            self.insert_name(seq);
            return Some(previous);
        }
        let seq = self.first + self.pairs.len() as u64;
        self.pairs.push_back(Pair {
            app,
            id: id.into(),
            name: name.into(),
        });
        let (pairs, hasher) = (&self.pairs, &self.hasher);
        self.by_id.insert_unique(id_hash, seq, |&s| {
            let pair = &pairs[(s - first) as usize];
            hasher.hash_one((pair.app, &*pair.id))
        });
        self.insert_name(seq);
        None
    }

    /// Indexes pair `seq` by its (app, name).
    fn insert_name(&mut self, seq: u64) {
        let (pairs, hasher, first) = (&self.pairs, &self.hasher, self.first);
        let pair = &pairs[(seq - first) as usize];
        let hash = hasher.hash_one((pair.app, &*pair.name));
        self.by_name.insert_unique(hash, seq, |&s| {
            let pair = &pairs[(s - first) as usize];
            hasher.hash_one((pair.app, &*pair.name))
        });
    }

    fn intern(&mut self, app: &str) -> u32 {
        if let Some(&index) = self.app_index.get(app) {
            return index;
        }
        let index = self.apps.len() as u32;
        self.apps.push(app.into());
        self.app_index.insert(app.into(), index);
        index
    }

    /// The userName learned for `id` in `app`.
    pub fn name_of(&self, app: &str, id: &str) -> Option<&str> {
        let app = *self.app_index.get(app)?;
        let hash = self.hasher.hash_one((app, id));
        self.by_id
            .find(hash, |&seq| {
                let pair = self.pair(seq);
                pair.app == app && *pair.id == *id
            })
            .map(|&seq| &*self.pair(seq).name)
    }

    /// The resource ids learned for the user `login` (case-folded) in `app`, oldest first.
    pub fn resources_of<'d>(&'d self, app: &str, login: &'d str) -> impl Iterator<Item = &'d str> {
        let app = self.app_index.get(app).copied();
        let mut seqs: Vec<u64> = match app {
            Some(app) => self
                .by_name
                .iter_hash(self.hasher.hash_one((app, login)))
                .copied()
                .filter(|&seq| {
                    let pair = self.pair(seq);
                    pair.app == app && *pair.name == *login
                })
                .collect(),
            None => Vec::new(),
        };
        seqs.sort_unstable();
        seqs.into_iter().map(|seq| &*self.pair(seq).id)
    }

    fn pair(&self, seq: u64) -> &Pair {
        &self.pairs[(seq - self.first) as usize]
    }

    /// Pairs known.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Forgets the oldest pairs until at most `max` are known. Returns how many went.
    pub fn shrink_to(&mut self, max: usize) -> u64 {
        let mut forgotten = 0;
        while self.pairs.len() > max {
            let seq = self.first;
            let pair = self.pair(seq);
            let id_hash = self.hasher.hash_one((pair.app, &*pair.id));
            let name_hash = self.hasher.hash_one((pair.app, &*pair.name));
            for (table, hash) in [(&mut self.by_id, id_hash), (&mut self.by_name, name_hash)] {
                if let Ok(entry) = table.find_entry(hash, |&s| s == seq) {
                    entry.remove();
                }
            }
            self.pairs.pop_front();
            self.first += 1;
            forgotten += 1;
        }
        forgotten
    }

    /// Every pair as (app, id, name), oldest first: the checkpointed form (restored in this
    /// order, so the oldest stay the first to go).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.pairs
            .iter()
            .map(|pair| (&*self.apps[pair.app as usize], &*pair.id, &*pair.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<'d>(directory: &'d Directory, app: &str, login: &'d str) -> Vec<&'d str> {
        directory.resources_of(app, login).collect()
    }

    fn learned(directory: &Directory) -> Vec<(String, String, String)> {
        directory
            .pairs()
            .map(|(a, i, n)| (a.into(), i.into(), n.into()))
            .collect()
    }

    #[test]
    fn learns_both_ways_and_forgets_the_oldest_first() {
        let mut directory = Directory::default();
        directory.learn("wiki", "u-1", "ann");
        directory.learn("wiki", "u-2", "bob");
        directory.learn("crm", "c-9", "ann");
        directory.learn("wiki", "u-1", "ann"); // known: keeps its place
        assert_eq!(directory.name_of("wiki", "u-2"), Some("bob"));
        assert_eq!(ids(&directory, "wiki", "ann"), ["u-1"]);
        assert_eq!(ids(&directory, "crm", "ann"), ["c-9"]);
        assert_eq!(directory.shrink_to(2), 1);
        assert_eq!(directory.name_of("wiki", "u-1"), None);
        assert!(ids(&directory, "wiki", "ann").is_empty());
        assert_eq!(directory.len(), 2);
        assert_eq!(directory.shrink_to(2), 0);
        // Learned again, it is the newest.
        directory.learn("wiki", "u-1", "ann");
        assert_eq!(directory.shrink_to(1), 2);
        assert_eq!(
            learned(&directory),
            [("wiki".into(), "u-1".into(), "ann".into())]
        );
    }

    /// Against the plainest model: a list of (app, id, name), oldest first.
    #[test]
    fn agrees_with_a_list_over_random_learning_and_forgetting() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut directory = Directory::default();
        let mut model: Vec<(String, String, String)> = Vec::new();
        for step in 0..20_000 {
            if next(50) == 0 {
                let max = next(40) as usize;
                let gone = model.len().saturating_sub(max);
                model.drain(..gone);
                assert_eq!(directory.shrink_to(max), gone as u64, "step {step}");
            } else {
                let (app, id, name) = (
                    format!("app{}", next(3)),
                    format!("u-{}", next(30)),
                    format!("user{}", next(20)),
                );
                match model.iter_mut().find(|(a, i, _)| *a == app && *i == id) {
                    Some(pair) => pair.2 = name.clone(),
                    None => model.push((app.clone(), id.clone(), name.clone())),
                }
                directory.learn(&app, &id, &name);
            }
            assert_eq!(learned(&directory), model, "step {step}");
            let (app, id, name) = (
                format!("app{}", next(4)),
                format!("u-{}", next(31)),
                format!("user{}", next(21)),
            );
            let expected = model
                .iter()
                .find(|(a, i, _)| *a == app && *i == id)
                .map(|p| p.2.as_str());
            assert_eq!(directory.name_of(&app, &id), expected, "step {step}");
            let expected: Vec<&str> = model
                .iter()
                .filter(|(a, _, n)| *a == app && *n == name)
                .map(|p| p.1.as_str())
                .collect();
            assert_eq!(ids(&directory, &app, &name), expected, "step {step}");
        }
    }

    #[test]
    fn an_id_that_names_someone_else_moves_to_them() {
        let mut directory = Directory::default();
        directory.learn("wiki", "u-1", "ann");
        directory.learn("wiki", "u-1", "ann.smith");
        assert_eq!(directory.name_of("wiki", "u-1"), Some("ann.smith"));
        assert!(ids(&directory, "wiki", "ann").is_empty());
        assert_eq!(ids(&directory, "wiki", "ann.smith"), ["u-1"]);
        assert_eq!(directory.len(), 1);
        assert_eq!(directory.shrink_to(0), 1);
        assert_eq!(directory.len(), 0);
        assert_eq!(directory.pairs().count(), 0);
    }
}
