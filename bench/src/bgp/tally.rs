//! The monitor's view of the target's Adj-RIB-Out: which of the benchmark's prefixes it holds
//! now, and how many of them with their final path.
//!
//! Pure. One byte per expected prefix (the prefixes are consecutive /24s, so a dense table beats
//! a hash set). Withdrawals, replacements and RFC 7606 treat-as-withdraw are applied as a BGP
//! receiver would (RFC 4271 §3.1: a new announcement replaces the previous path; §4.3: withdrawn
//! routes first, then NLRI).

use tabby_bgp::wire::{AttributeValue, Ipv4Nlri, MpNlri, Update, UpdateAction};

use super::workload::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Slot {
    Absent = 0,
    /// Held, but not with the path the run must end on (`same` mode: a longer path).
    Interim = 1,
    Final = 2,
}

/// Counts of what the monitor has received.
#[derive(Debug, Clone)]
pub struct Tally {
    workload: Workload,
    slots: Vec<Slot>,
    held: usize,
    final_count: usize,
    /// Announcements of prefixes no injector sends (a target leaking other routes).
    pub unexpected: u64,
    /// Withdrawals of prefixes not held.
    pub spurious_withdrawals: u64,
    pub updates: u64,
    pub announced: u64,
    pub withdrawn: u64,
}

impl Tally {
    pub fn new(workload: Workload) -> Tally {
        // `Workload::new` caps distinct() at 2^22, so this is at most 4 MiB.
        let n = workload.distinct() as usize;
        Tally {
            workload,
            slots: vec![Slot::Absent; n],
            held: 0,
            final_count: 0,
            unexpected: 0,
            spurious_withdrawals: 0,
            updates: 0,
            announced: 0,
            withdrawn: 0,
        }
    }

    /// Distinct benchmark prefixes held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Prefixes held with their final path.
    pub fn final_count(&self) -> usize {
        self.final_count
    }

    /// Prefixes the run must end with.
    pub fn expected(&self) -> usize {
        self.slots.len()
    }

    /// Every expected prefix is held with its final path.
    pub fn is_complete(&self) -> bool {
        self.final_count == self.slots.len()
    }

    fn set(&mut self, nlri: &Ipv4Nlri, to: Slot) {
        let Some(ix) = self.workload.prefix_index(&nlri.prefix) else {
            if to == Slot::Absent {
                self.spurious_withdrawals += 1;
            } else {
                self.unexpected += 1;
            }
            return;
        };
        let from = self.slots[ix];
        if from == Slot::Absent && to == Slot::Absent {
            self.spurious_withdrawals += 1;
        }
        self.held = self.held + usize::from(to != Slot::Absent) - usize::from(from != Slot::Absent);
        self.final_count =
            self.final_count + usize::from(to == Slot::Final) - usize::from(from == Slot::Final);
        self.slots[ix] = to;
    }

    /// Applies one UPDATE received from the target.
    pub fn apply(&mut self, update: &Update) {
        self.updates += 1;
        let mut path = None;
        let mut mp_reach: &[Ipv4Nlri] = &[];
        let mut mp_unreach: &[Ipv4Nlri] = &[];
        for a in &update.attributes {
            match &a.value {
                AttributeValue::AsPath(p) => path = Some(p),
                AttributeValue::MpReachNlri(r) => {
                    if let MpNlri::Ipv4Unicast(v) = &r.nlri {
                        mp_reach = v;
                    }
                }
                AttributeValue::MpUnreachNlri(u) => {
                    if let MpNlri::Ipv4Unicast(v) = &u.withdrawn {
                        mp_unreach = v;
                    }
                }
                _ => {}
            }
        }
        for n in update.withdrawn.iter().chain(mp_unreach) {
            self.withdrawn += 1;
            self.set(n, Slot::Absent);
        }
        // RFC 7606 §2: treat-as-withdraw turns the announcements into withdrawals.
        let to = if update.action == UpdateAction::TreatAsWithdraw {
            Slot::Absent
        } else if path.is_some_and(|p| self.workload.is_final_path(p)) {
            Slot::Final
        } else {
            Slot::Interim
        };
        for n in update.nlri.iter().chain(mp_reach) {
            self.announced += 1;
            self.set(n, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::workload::Mode;
    use tabby_bgp::wire::{AsPath, Ipv4Prefix, MpNextHop, MpReach, MpUnreach};

    fn n(s: &str) -> Ipv4Nlri {
        Ipv4Nlri::new(s.parse::<Ipv4Prefix>().unwrap())
    }

    fn announce(path: &[u32], prefixes: &[&str]) -> Update {
        Update {
            attributes: vec![AttributeValue::AsPath(AsPath::sequence(path.iter().copied())).into()],
            nlri: prefixes.iter().map(|p| n(p)).collect(),
            ..Update::default()
        }
    }

    fn withdraw(prefixes: &[&str]) -> Update {
        Update {
            withdrawn: prefixes.iter().map(|p| n(p)).collect(),
            ..Update::default()
        }
    }

    #[test]
    fn unique_counts_distinct_prefixes_and_withdrawals() {
        let w = Workload::new(Mode::Unique, 2, 2).unwrap(); // 16.0.0-3.0/24
        let mut t = Tally::new(w);
        t.apply(&announce(&[65000, 65001], &["16.0.0.0/24", "16.0.1.0/24"]));
        assert_eq!((t.held(), t.final_count(), t.is_complete()), (2, 2, false));
        // The same prefix again (an implicit replacement) is not counted twice.
        t.apply(&announce(&[65000, 65001], &["16.0.1.0/24"]));
        assert_eq!(t.held(), 2);
        t.apply(&withdraw(&["16.0.0.0/24"]));
        assert_eq!(t.held(), 1);
        t.apply(&announce(
            &[65000, 65002],
            &["16.0.0.0/24", "16.0.2.0/24", "16.0.3.0/24"],
        ));
        assert!(t.is_complete());
        assert_eq!((t.announced, t.withdrawn, t.updates), (6, 1, 4));
        // Withdrawn after completion: no longer complete.
        t.apply(&withdraw(&["16.0.3.0/24"]));
        assert!(!t.is_complete());
        assert_eq!(t.held(), 3);
    }

    #[test]
    fn withdrawals_are_applied_before_nlri_of_the_same_update() {
        let w = Workload::new(Mode::Unique, 1, 1).unwrap();
        let mut t = Tally::new(w);
        let mut u = announce(&[65000, 65001], &["16.0.0.0/24"]);
        u.withdrawn = vec![n("16.0.0.0/24")];
        t.apply(&u);
        assert!(t.is_complete());
        assert_eq!(t.spurious_withdrawals, 1);
    }

    #[test]
    fn unexpected_and_spurious_are_counted_not_held() {
        let w = Workload::new(Mode::Unique, 1, 2).unwrap();
        let mut t = Tally::new(w);
        t.apply(&announce(&[65000], &["10.0.0.0/24", "16.0.2.0/24"]));
        t.apply(&withdraw(&["16.0.0.0/24", "192.0.2.0/24"]));
        assert_eq!((t.held(), t.unexpected, t.spurious_withdrawals), (0, 2, 2));
    }

    #[test]
    fn same_mode_waits_for_the_shortest_path() {
        let w = Workload::new(Mode::Same, 3, 2).unwrap();
        let mut t = Tally::new(w);
        let both = ["16.0.0.0/24", "16.0.1.0/24"];
        t.apply(&announce(&[65000, 65003, 65003, 65003], &both));
        assert_eq!((t.held(), t.final_count()), (2, 0));
        t.apply(&announce(&[65000, 65001], &both[..1]));
        assert_eq!((t.held(), t.final_count()), (2, 1));
        // A better path replaced by a worse one again is no longer final.
        t.apply(&announce(&[65000, 65002, 65002], &both[..1]));
        assert_eq!(t.final_count(), 0);
        t.apply(&announce(&[65000, 65001], &both));
        assert!(t.is_complete());
    }

    #[test]
    fn treat_as_withdraw_and_mp_attributes() {
        let w = Workload::new(Mode::Unique, 1, 2).unwrap();
        let mut t = Tally::new(w);
        let mut u = Update {
            attributes: vec![
                AttributeValue::AsPath(AsPath::sequence([65000, 65001])).into(),
                AttributeValue::MpReachNlri(MpReach {
                    next_hop: MpNextHop::Ipv4("10.0.0.1".parse().unwrap()),
                    nlri: MpNlri::Ipv4Unicast(vec![n("16.0.0.0/24"), n("16.0.1.0/24")]),
                })
                .into(),
            ],
            ..Update::default()
        };
        t.apply(&u);
        assert!(t.is_complete());
        u.attributes = vec![
            AttributeValue::MpUnreachNlri(MpUnreach {
                withdrawn: MpNlri::Ipv4Unicast(vec![n("16.0.1.0/24")]),
            })
            .into(),
        ];
        t.apply(&u);
        assert_eq!(t.held(), 1);
        let mut bad = announce(&[65000, 65001], &["16.0.0.0/24"]);
        bad.action = UpdateAction::TreatAsWithdraw;
        t.apply(&bad);
        assert_eq!(t.held(), 0);
    }
}
