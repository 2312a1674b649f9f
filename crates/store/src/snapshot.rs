//! Snapshots: the store's swarms, peers (with their ages) and completed counts, walked out
//! without stopping the workers, and put back into a fresh store. The file format is the
//! server's business; the store hands out and takes in plain records.
//!
//! An export pins the epoch per map shard, not for the whole walk, so a walk of ten million
//! peers neither blocks an announce nor holds back the reclamation of retired blocks for
//! long. It is not a point-in-time copy: a swarm or peer that changes while the walk goes on is
//! written as it was when its shard was visited (as for any live copy of a tracker, the clients
//! re-announce within an interval anyway).

use crate::PeerStore;
use crate::addr::{PeerAddress, STAMP_MASK, STAMP_SHIFT, stamp_of};
use crate::family::SHARDS;
use crate::sync::epoch;

impl PeerStore {
    /// Calls `f(info_hash, completed, peers)` for every swarm of family `A` with at least one
    /// live, unexpired peer; each peer is `(address, seeder, age in seconds at now_secs)`.
    /// Swarms whose peers all expired are left out (the cleaner would free them).
    pub fn export<A: PeerAddress>(
        &self,
        now_secs: u32,
        mut f: impl FnMut(&[u8; 20], u32, &[(A, bool, u32)]),
    ) {
        let fam = self.family::<A>();
        let now_stamp = stamp_of(now_secs);
        let mut peers = Vec::new();
        let mut live = |ih: &[u8; 20], completed: u32, ps: &[(A, bool, u32)]| {
            if !ps.is_empty() {
                f(ih, completed, ps);
            }
        };
        for s in 0..SHARDS {
            let guard = epoch::pin();
            fam.export_shard(s, now_stamp, &self.ctx, &guard, &mut peers, &mut live);
        }
    }

    /// Puts back one exported swarm: its peers as if each had announced `age` seconds before
    /// `now_secs`, except those older than the peer timeout (expired while fjord was down),
    /// and `completed` added to its count. Returns the peers stored (fewer than given when
    /// some expired, or the store reached `max_peers` / `max_swarms`). Nothing is created for
    /// a swarm none of whose peers is still fresh.
    pub fn restore<A: PeerAddress>(
        &self,
        info_hash: &[u8; 20],
        completed: u32,
        peers: &[(A, bool, u32)],
        now_secs: u32,
    ) -> usize {
        let fam = self.family::<A>();
        let timeout = self
            .config
            .peer_timeout_secs
            .min(crate::MAX_PEER_TIMEOUT_SECS);
        let key = self.swarm_key(info_hash);
        let guard = epoch::pin();
        let now_stamp = u64::from(now_secs >> STAMP_SHIFT);
        let mut stored = 0;
        for &(addr, seeder, age) in peers {
            if age > timeout || addr.port() == 0 {
                continue;
            }
            // The stamp of `now - age`, modulo the stamp range (the clock may be younger than
            // the peer: the new process's clock starts at zero).
            let stamp = now_stamp.wrapping_sub(u64::from(age >> STAMP_SHIFT)) & STAMP_MASK;
            let pk = addr.peer_key(self.ctx.seed);
            if fam.restore_peer(info_hash, key.hash(), &pk, seeder, stamp, &self.ctx, &guard) {
                stored += 1;
            }
        }
        if stored > 0 {
            fam.restore_completed(info_hash, key.hash(), completed, &self.ctx, &guard);
        }
        stored
    }
}
