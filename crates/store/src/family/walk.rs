//! Test and debug walkers: a swarm's peers, its raw counts, a walk over every swarm of the
//! family (`audit`), and the bytes its structures take.

use super::{Ctx, Family, MapSlot, SHARDS, info_hash_hash};
use crate::addr::PeerAddress;
use crate::block::{Block, block_bytes};
use crate::sync::Ordering::Acquire;
use crate::sync::epoch::Guard;
use crate::table::{Slots, table_bytes};

impl Family {
    /// Test/debug view: the live peers (address, seeder) of the swarm for `ih`.
    pub(crate) fn peers_of<A: PeerAddress>(
        &self,
        ih: &[u8; 20],
        ctx: &Ctx,
        g: &Guard,
    ) -> Option<Vec<(A, bool)>> {
        let h = info_hash_hash(ih, ctx.seed);
        let b = self.lookup(ih, h, ctx, g)?;
        Some(self.peers_in(b))
    }

    fn peers_in<A: PeerAddress>(&self, b: Block<'_>) -> Vec<(A, bool)> {
        let mut v = Vec::new();
        for slot in b.slots() {
            let m = slot.meta().load(Acquire);
            if m.is_live(self.fam) {
                v.push((A::decode(m, slot.addr_words()), m.is_seeder()));
            }
        }
        v
    }

    /// Raw (signed) counts of the swarm for `ih`: (seeders, leechers, completed).
    pub(crate) fn raw_counts(
        &self,
        ih: &[u8; 20],
        ctx: &Ctx,
        g: &Guard,
    ) -> Option<(i32, i32, u32)> {
        let b = self.lookup(ih, info_hash_hash(ih, ctx.seed), ctx, g)?;
        let (s, l) = self.counts(b);
        Some((s as i32, l as i32, Self::completed_of(b)))
    }

    /// Test/debug walk over every swarm: (swarms, peers stored, sum of their counts).
    pub(crate) fn audit<A: PeerAddress>(&self, g: &Guard) -> (usize, usize, i64) {
        let (mut swarms, mut peers, mut counted) = (0, 0, 0i64);
        self.walk_swarms(g, |b| {
            swarms += 1;
            let (s, l) = self.counts(b);
            counted += i64::from(s as i32) + i64::from(l as i32);
            peers += self.peers_in::<A>(b).len();
        });
        (swarms, peers, counted)
    }

    /// Calls `f` on the block of every live swarm (walks every shard).
    pub(crate) fn walk_swarms<'g>(&self, g: &'g Guard, mut f: impl FnMut(Block<'g>)) {
        for s in 0..SHARDS {
            let t = self.map_table(s, g);
            for i in 0..t.cap() {
                if let MapSlot::Live(b) = self.map_slot(t, i) {
                    f(b);
                }
            }
        }
    }

    /// Bytes requested by live structures: (block headers, peer slots, map tables).
    pub(crate) fn allocated_bytes(&self, g: &Guard) -> (usize, usize, usize) {
        let (mut hd, mut sl, mut map) = (0, 0, 0);
        for s in 0..SHARDS {
            map += table_bytes(self.map_table(s, g).cap(), 1);
        }
        self.walk_swarms(g, |b| {
            let (h, s) = block_bytes(b.cap(), self.words());
            hd += h;
            sl += s;
        });
        (hd, sl, map)
    }
}
