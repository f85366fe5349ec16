//! The store's Lua scripts, one file each under `lua/` so they read, diff and
//! lint as Lua; the session scripts share the helpers of `lua/prelude.lua`.

use redis::{Cmd, ToRedisArgs};

/// One script: its source (for `SCRIPT LOAD`) and its SHA1 (for `EVALSHA`).
pub(super) struct Lua {
    pub(super) code: String,
    pub(super) hash: String,
}

impl Lua {
    fn new(code: String) -> Self {
        let hash = redis::Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }

    /// `EVALSHA <sha> 1 <key>`, with room for `args` more arguments of about
    /// `bytes` bytes in all: the caller adds them.
    pub(super) fn call(&self, key: impl ToRedisArgs, key_len: usize, args: usize, bytes: usize) -> Cmd {
        let mut cmd = Cmd::with_capacity(4 + args, 7 + self.hash.len() + 1 + key_len + bytes);
        cmd.arg("EVALSHA").arg(&self.hash).arg(1).arg(key);
        cmd
    }
}

pub(super) struct Scripts {
    pub(super) create: Lua,
    pub(super) rotate: Lua,
    pub(super) list: Lua,
    pub(super) revoke: Lua,
    pub(super) revoke_all: Lua,
    pub(super) reauthenticate: Lua,
    pub(super) reconcile: Lua,
    pub(super) record_revoked: Lua,
}

const PRELUDE: &str = include_str!("lua/prelude.lua");

impl Scripts {
    pub(super) fn new() -> Self {
        let with_prelude = |body: &str| Lua::new(format!("{PRELUDE}{body}"));
        Self {
            create: with_prelude(include_str!("lua/create.lua")),
            rotate: with_prelude(include_str!("lua/rotate.lua")),
            list: with_prelude(include_str!("lua/list.lua")),
            revoke: with_prelude(include_str!("lua/revoke.lua")),
            revoke_all: with_prelude(include_str!("lua/revoke_all.lua")),
            reauthenticate: with_prelude(include_str!("lua/reauthenticate.lua")),
            reconcile: with_prelude(include_str!("lua/reconcile.lua")),
            record_revoked: Lua::new(include_str!("lua/record_revoked.lua").to_owned()),
        }
    }
}
