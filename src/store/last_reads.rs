//! What a node read last from its shared store, so that reads can answer
//! from it while the store cannot be reached (static stability). Bounded:
//! reads differ by their options (a history limit, say), and an admin
//! client asking with ever new options must not grow a node's memory
//! without end; the reads made longest ago go first.

use std::collections::HashMap;

/// How many different reads are remembered.
pub const REMEMBERED: usize = 1024;

/// The last answer of each of the most recent different reads.
pub struct LastReads<V> {
    /// Each read's last answer, and when it was made (a count of reads).
    answers: HashMap<String, (V, u64)>,
    reads: u64,
    limit: usize,
}

impl<V: Clone> LastReads<V> {
    pub fn new(limit: usize) -> Self {
        Self {
            answers: HashMap::new(),
            reads: 0,
            limit: limit.max(1),
        }
    }

    /// Remembers `answer` as the last one of `read`; past the limit, the
    /// read made longest ago is forgotten.
    pub fn remember(&mut self, read: String, answer: V) {
        self.reads += 1;
        self.answers.insert(read, (answer, self.reads));
        if self.answers.len() > self.limit {
            let oldest = self
                .answers
                .iter()
                .min_by_key(|(_, (_, made))| *made)
                .map(|(read, _)| read.clone());
            if let Some(oldest) = oldest {
                self.answers.remove(&oldest);
            }
        }
    }

    /// The last answer of `read`, if it is remembered.
    pub fn answer(&self, read: &str) -> Option<V> {
        self.answers.get(read).map(|(answer, _)| answer.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_made_again_is_the_newest_and_stays_while_others_go() {
        let mut reads = LastReads::new(2);
        reads.remember("status".into(), 1);
        reads.remember("b".into(), 2);
        reads.remember("status".into(), 3);
        reads.remember("c".into(), 4);
        assert_eq!(reads.answer("status"), Some(3));
        assert_eq!(reads.answer("b"), None);
        assert_eq!(reads.answer("c"), Some(4));
        assert_eq!(reads.answers.len(), 2);
    }

    #[test]
    fn beyond_the_limit_the_read_remembered_longest_ago_goes() {
        let mut reads = LastReads::new(3);
        for (n, read) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            reads.remember(read.into(), n);
        }
        assert_eq!(reads.answers.len(), 3);
        assert_eq!(reads.answer("a"), None);
        assert_eq!(reads.answer("b"), None);
        assert_eq!(reads.answer("e"), Some(4));
    }

    #[test]
    fn ever_new_reads_never_grow_past_the_limit() {
        let mut reads = LastReads::new(REMEMBERED);
        for n in 0..(REMEMBERED * 5) {
            reads.remember(format!("history?limit={n}"), n);
        }
        assert_eq!(reads.answers.len(), REMEMBERED);
        assert_eq!(
            reads.answer(&format!("history?limit={}", REMEMBERED * 5 - 1)),
            Some(REMEMBERED * 5 - 1)
        );
    }
}
