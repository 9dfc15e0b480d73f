//! Which priority level of a queue a member takes its next messages from: the highest level
//! first, with a starvation guard. The guard reserves `lowPriorityShare` percent of the
//! messages a member takes for the levels below the top one: whenever fewer than that share
//! came from lower levels, the next turn is a guard turn that tries the lower levels first
//! (round robin among them, so each gets a part of the share), then the top level. Counts
//! decay (halved past 10 000) so the guard follows the recent mix, not the whole history.
//!
//! Pure: the queue member ([`crate::priority_queue`]) asks for an order, fetches, and reports
//! what it took.

/// Counts beyond which both are halved.
const DECAY_AT: u64 = 10_000;

/// The order in which a member tries a queue's levels (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Picker {
    levels: u32,
    share: u64,
    /// Messages taken from the top level, or on normal turns.
    normal: u64,
    /// Messages taken from lower levels on guard turns.
    guarded: u64,
    /// The lower level a guard turn tries first.
    cursor: u32,
}

/// One turn: the levels to try, in order, and whether it is a guard turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Turn {
    pub(crate) order: Vec<u32>,
    pub(crate) guard: bool,
}

impl Picker {
    /// A picker for `levels` levels (0 = lowest) reserving `share` percent for lower levels.
    pub(crate) fn new(levels: u32, share: u32) -> Self {
        Self {
            levels: levels.max(1),
            share: u64::from(share.min(100)),
            normal: 0,
            guarded: 0,
            cursor: 0,
        }
    }

    fn guard_due(&self) -> bool {
        self.levels > 1
            && self.share > 0
            && self.guarded * 100 < self.share * (self.normal + self.guarded + 1)
    }

    /// The next turn.
    pub(crate) fn turn(&mut self) -> Turn {
        let top = self.levels - 1;
        let descending: Vec<u32> = (0..self.levels).rev().collect();
        if !self.guard_due() {
            return Turn {
                order: descending,
                guard: false,
            };
        }
        let lower = top; // levels 0..top
        let start = self.cursor % lower;
        self.cursor = (self.cursor + 1) % lower;
        let mut order: Vec<u32> = (0..lower).map(|i| (start + i) % lower).collect();
        order.push(top);
        Turn { order, guard: true }
    }

    /// Reports `count` messages taken from `level` on a turn.
    pub(crate) fn took(&mut self, turn: &Turn, level: u32, count: u64) {
        if turn.guard && level + 1 < self.levels {
            self.guarded += count;
        } else {
            self.normal += count;
        }
        if self.normal + self.guarded > DECAY_AT {
            self.normal /= 2;
            self.guarded /= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a member with every level always full, one message per turn.
    fn shares(levels: u32, share: u32, turns: usize) -> Vec<usize> {
        let mut p = Picker::new(levels, share);
        let mut taken = vec![0; levels as usize];
        for _ in 0..turns {
            let t = p.turn();
            let level = t.order[0];
            p.took(&t, level, 1);
            taken[level as usize] += 1;
        }
        taken
    }

    #[test]
    fn the_top_level_goes_first_and_lower_levels_get_their_share() {
        let taken = shares(2, 10, 1000);
        assert!((95..=105).contains(&taken[0]), "{taken:?}");
        let taken = shares(3, 30, 3000);
        assert!(taken[0] >= 400 && taken[1] >= 400, "{taken:?}");
        assert!(taken[2] >= 2000, "{taken:?}");
    }

    #[test]
    fn no_share_means_strict_priority() {
        assert_eq!(shares(3, 0, 100), vec![0, 0, 100]);
        let mut p = Picker::new(1, 50);
        assert_eq!(p.turn().order, vec![0]);
    }

    #[test]
    fn a_guard_turn_falls_back_to_the_top_level() {
        let mut p = Picker::new(3, 50);
        let t = p.turn();
        assert!(t.guard);
        assert_eq!(t.order.last(), Some(&2));
        // Lower levels empty: the top level's message does not count towards the guard.
        p.took(&t, 2, 1);
        assert!(p.turn().guard);
    }
}
