//! Test and debug walkers.

use super::map::{M_FROZEN, M_REMOVED};
use super::{Ctx, Family, SHARDS, info_hash_hash};
use crate::addr::{PeerAddress, SEEDER, is_live};
use crate::block::{Block, block_bytes};
use crate::sync::Ordering::*;
use crate::sync::epoch::Guard;

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

    fn peers_in<A: PeerAddress>(&self, b: Block) -> Vec<(A, bool)> {
        let mut v = Vec::new();
        for i in 0..b.cap() {
            let m = b.word(i, 0).load(Acquire);
            if is_live(self.fam, m) {
                v.push((A::decode(m, self.addr_words(b, i)), m & SEEDER != 0));
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
    pub(crate) fn walk_swarms(&self, g: &Guard, mut f: impl FnMut(Block)) {
        for s in 0..SHARDS {
            let t = self.map_table(s, g);
            for i in 0..t.cap() {
                let v = t.word(i, 0).load(Acquire) & !M_FROZEN;
                if v != 0 && v & M_REMOVED == 0 {
                    // SAFETY: live slot read under `g`.
                    f(unsafe { self.block_of(v, g) });
                }
            }
        }
    }

    /// Bytes requested by live structures: (block headers, peer slots, map tables).
    pub(crate) fn allocated_bytes(&self, g: &Guard) -> (usize, usize, usize) {
        let (mut hd, mut sl, mut map) = (0, 0, 0);
        for s in 0..SHARDS {
            map += crate::table::table_bytes(self.map_table(s, g).cap(), 1);
        }
        self.walk_swarms(g, |b| {
            let (h, s) = block_bytes(b.cap(), self.words());
            hd += h;
            sl += s;
        });
        (hd, sl, map)
    }
}
