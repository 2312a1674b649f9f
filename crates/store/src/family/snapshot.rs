//! Snapshots (see `snapshot.rs` of the crate): a shard's swarms with their peers and ages, and
//! the restoring of peers and completed counts.

use super::{Ctx, Family, MapSlot, Upsert, stripe_of};
use crate::addr::{PeerAddress, PeerKey};
use crate::sync::Ordering::Acquire;
use crate::sync::epoch::Guard;
use crate::table::Slots;

impl Family {
    /// Calls `f` with the info hash, completed count and live, unexpired peers (address,
    /// seeder, age in seconds) of every swarm of shard `s`, as of `now_stamp`.
    pub(crate) fn export_shard<A: PeerAddress>(
        &self,
        s: usize,
        now_stamp: u64,
        ctx: &Ctx,
        g: &Guard,
        peers: &mut Vec<(A, bool, u32)>,
        f: &mut impl FnMut(&[u8; 20], u32, &[(A, bool, u32)]),
    ) {
        let t = self.map_table(s, g);
        for i in 0..t.cap() {
            let MapSlot::Live(b) = self.map_slot(t, i) else {
                continue;
            };
            peers.clear();
            for slot in b.slots() {
                let m = slot.meta().load(Acquire);
                if m.is_live(self.fam) && !m.is_expired(now_stamp, ctx.timeout_units) {
                    peers.push((
                        A::decode(m, slot.addr_words()),
                        m.is_seeder(),
                        m.age_secs(now_stamp),
                    ));
                }
            }
            f(b.info_hash(), Self::completed_of(b), peers);
        }
    }

    /// Stores peer `pk` with `stamp` (restoring a snapshot); false if the store is full.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn restore_peer(
        &self,
        ih: &[u8; 20],
        h: u64,
        pk: &PeerKey,
        seeder: bool,
        stamp: u64,
        ctx: &Ctx,
        g: &Guard,
    ) -> bool {
        loop {
            let Some(sw) = self
                .lookup(ih, h, ctx, g)
                .or_else(|| self.get_or_insert(ih, h, ctx, g))
            else {
                return false;
            };
            match self
                .upsert(sw, stripe_of(h), pk, seeder, false, stamp, ctx, g)
                .0
            {
                Upsert::Inserted | Upsert::Updated => return true,
                Upsert::Full => return false,
                Upsert::Dead => continue,
            }
        }
    }

    /// Adds `n` completions to the swarm of `ih` (restoring a snapshot), if it exists.
    pub(crate) fn restore_completed(&self, ih: &[u8; 20], h: u64, n: u32, ctx: &Ctx, g: &Guard) {
        let stripe = stripe_of(h);
        for _ in 0..n {
            let Some(b) = self.lookup(ih, h, ctx, g) else {
                return;
            };
            self.add_completed(b, stripe, ctx, g);
        }
    }
}
