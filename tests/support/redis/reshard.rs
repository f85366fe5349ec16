//! Live resharding of a [`RedisCluster`]: moving one slot to another master
//! the way `redis-cli --cluster reshard` does, with a pause in the middle.
//!
//! [`RedisCluster::begin_migration`] marks the slot `IMPORTING` on the target
//! and `MIGRATING` on the source; [`SlotMigration::move_keys`] moves keys in
//! batches (`CLUSTER GETKEYSINSLOT` + `MIGRATE … KEYS`), so a test can hold
//! the slot half-moved — where clients get `-ASK` redirections for moved keys
//! — while it sends traffic; [`SlotMigration::finish`] moves the rest and
//! assigns the slot (`CLUSTER SETSLOT <slot> NODE`) on every master.

use std::time::{Duration, Instant};

use super::{CLUSTER_CEILING, RedisCluster, RedisServer};

/// How long `MIGRATE` may wait for the target (ms, its `timeout` argument).
const MIGRATE_TIMEOUT_MS: &str = "5000";

impl RedisCluster {
    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &[u8]) -> u16 {
        let reply = self.nodes[0].cmd_bytes(&[b"CLUSTER".as_slice(), b"KEYSLOT", key]).expect("CLUSTER KEYSLOT");
        String::from_utf8_lossy(&reply[0]).parse().expect("a slot number")
    }

    /// The index in [`nodes`](Self::nodes) of the master that owns `slot`
    /// by its own account (`CLUSTER NODES`, `myself` line).
    pub fn owner_of_slot(&self, slot: u16) -> usize {
        self.nodes
            .iter()
            .position(|node| {
                let nodes = node.cmd(&["CLUSTER", "NODES"]).expect("CLUSTER NODES");
                nodes.lines().find(|l| l.contains("myself")).is_some_and(|line| owns(line, slot))
            })
            .unwrap_or_else(|| panic!("no node owns slot {slot}"))
    }

    /// The node that owns `key`'s slot.
    pub fn node_for_key(&self, key: &[u8]) -> &RedisServer {
        &self.nodes[self.owner_of_slot(self.slot_of(key))]
    }

    /// The node id (`CLUSTER MYID`) of node `index`.
    pub fn node_id(&self, index: usize) -> String {
        self.nodes[index].cmd(&["CLUSTER", "MYID"]).expect("CLUSTER MYID")
    }

    /// Starts moving `slot` from its owner to node `to` (an index in
    /// [`nodes`](Self::nodes)): `CLUSTER SETSLOT <slot> IMPORTING <source>` on
    /// the target, then `MIGRATING <target>` on the source. No key moves yet.
    ///
    /// Panics when node `to` already owns the slot.
    pub fn begin_migration(&self, slot: u16, to: usize) -> SlotMigration<'_> {
        let from = self.owner_of_slot(slot);
        assert_ne!(from, to, "node {to} already owns slot {slot}");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let slot_s = slot.to_string();
        self.nodes[to]
            .cmd(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id])
            .unwrap_or_else(|e| panic!("CLUSTER SETSLOT IMPORTING: {e}"));
        self.nodes[from]
            .cmd(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id])
            .unwrap_or_else(|e| panic!("CLUSTER SETSLOT MIGRATING: {e}"));
        SlotMigration { cluster: self, slot, from, to, to_id, finished: false }
    }

    /// Moves `slot` to node `to` at once (all keys, then the ownership).
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        self.begin_migration(slot, to).finish();
    }
}

/// A slot being moved between two masters; see the [module](self) docs.
/// Dropped unfinished, it finishes (ignoring errors), so a shared cluster is
/// never left with an open slot.
#[derive(Debug)]
pub struct SlotMigration<'a> {
    cluster: &'a RedisCluster,
    slot: u16,
    from: usize,
    to: usize,
    to_id: String,
    finished: bool,
}

impl SlotMigration<'_> {
    /// The slot being moved.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// The source node's index.
    pub fn from(&self) -> usize {
        self.from
    }

    /// The target node's index.
    pub fn to(&self) -> usize {
        self.to
    }

    /// The number of the slot's keys still on the source (`COUNTKEYSINSLOT`).
    pub fn keys_left(&self) -> usize {
        let n = self.source().cmd(&["CLUSTER", "COUNTKEYSINSLOT", &self.slot.to_string()]).expect("COUNTKEYSINSLOT");
        n.parse().expect("a count")
    }

    /// Moves up to `count` of the slot's keys still on the source to the
    /// target (`GETKEYSINSLOT` then one `MIGRATE … KEYS`); returns how many.
    ///
    /// Panics when a command fails.
    pub fn move_keys(&self, count: usize) -> usize {
        self.try_move_keys(count).unwrap_or_else(|e| panic!("moving keys of slot {}: {e}", self.slot))
    }

    /// Moves these keys (of the slot, still on the source) to the target.
    ///
    /// Panics when `MIGRATE` fails.
    pub fn move_these(&self, keys: &[&[u8]]) {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        self.migrate(&keys).unwrap_or_else(|e| panic!("moving keys of slot {}: {e}", self.slot));
    }

    fn try_move_keys(&self, count: usize) -> Result<usize, String> {
        let keys = self
            .source()
            .cmd_bytes(&["CLUSTER", "GETKEYSINSLOT", &self.slot.to_string(), &count.to_string()])
            .map_err(|e| format!("CLUSTER GETKEYSINSLOT: {e}"))?;
        self.migrate(&keys)?;
        Ok(keys.len())
    }

    /// Moves every key left, assigns the slot to the target on every master
    /// (target first, then source, then the others) and waits until every
    /// node sees the target as its owner.
    ///
    /// Panics when a step fails or the nodes do not agree within 30 s.
    pub fn finish(mut self) {
        self.finished = true;
        self.complete().unwrap_or_else(|e| panic!("finishing the migration of slot {}: {e}", self.slot));
    }

    fn complete(&self) -> Result<(), String> {
        while self.try_move_keys(1000)? > 0 {}
        let slot = self.slot.to_string();
        let nodes = &self.cluster.nodes;
        let order =
            [self.to, self.from].into_iter().chain((0..nodes.len()).filter(|i| ![self.to, self.from].contains(i)));
        for i in order {
            nodes[i]
                .cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &self.to_id])
                .map_err(|e| format!("CLUSTER SETSLOT NODE on node {i}: {e}"))?;
        }
        // A ping the source sent before its SETSLOT can still arrive and,
        // when the source's config epoch is the higher, give the slot back
        // to it in a node's view for good. With the target's epoch the
        // greatest, the target's own pings correct every such view.
        nodes[self.to].cmd(&["CLUSTER", "BUMPEPOCH"]).map_err(|e| format!("CLUSTER BUMPEPOCH on the target: {e}"))?;
        let deadline = Instant::now() + CLUSTER_CEILING;
        loop {
            let agreed = nodes.iter().all(|node| {
                node.cmd(&["CLUSTER", "NODES"]).is_ok_and(|view| {
                    view.lines().any(|l| l.starts_with(&self.to_id) && owns(l, self.slot))
                        && !view.lines().any(|l| !l.starts_with(&self.to_id) && owns(l, self.slot))
                })
            });
            if agreed {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the nodes do not agree on the new owner within {CLUSTER_CEILING:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn source(&self) -> &RedisServer {
        &self.cluster.nodes[self.from]
    }

    fn migrate(&self, keys: &[Vec<u8>]) -> Result<(), String> {
        if keys.is_empty() {
            return Ok(());
        }
        let port = self.cluster.nodes[self.to].port().to_string();
        let mut args: Vec<&[u8]> =
            vec![b"MIGRATE", b"127.0.0.1", port.as_bytes(), b"", b"0", MIGRATE_TIMEOUT_MS.as_bytes(), b"KEYS"];
        args.extend(keys.iter().map(Vec::as_slice));
        match self.source().cmd_bytes(&args) {
            Ok(reply) if reply == [b"OK"] || reply == [b"NOKEY"] => Ok(()),
            Ok(reply) => Err(format!("MIGRATE replied {reply:?}")),
            Err(e) => Err(format!("MIGRATE: {e}")),
        }
    }
}

impl Drop for SlotMigration<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            let _ = self.complete();
        }
    }
}

/// Whether a `CLUSTER NODES` line lists `slot` among its node's slots
/// (`a-b` ranges and single slots; `[…]` migration markers are not ownership).
fn owns(line: &str, slot: u16) -> bool {
    line.split(' ').skip(8).any(|range| {
        if range.starts_with('[') {
            return false;
        }
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
    })
}
