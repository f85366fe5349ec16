//! The store's Lua scripts, one file each under `lua/` so they read, diff and
//! lint as Lua; the session scripts share the helpers of `lua/prelude.lua`.

use redis::Script;

pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) rotate: Script,
    pub(super) list: Script,
    pub(super) revoke: Script,
    pub(super) revoke_all: Script,
    pub(super) reauthenticate: Script,
    pub(super) reconcile: Script,
    pub(super) record_revoked: Script,
}

const PRELUDE: &str = include_str!("lua/prelude.lua");

impl Scripts {
    pub(super) fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            create: with_prelude(include_str!("lua/create.lua")),
            rotate: with_prelude(include_str!("lua/rotate.lua")),
            list: with_prelude(include_str!("lua/list.lua")),
            revoke: with_prelude(include_str!("lua/revoke.lua")),
            revoke_all: with_prelude(include_str!("lua/revoke_all.lua")),
            reauthenticate: with_prelude(include_str!("lua/reauthenticate.lua")),
            reconcile: with_prelude(include_str!("lua/reconcile.lua")),
            record_revoked: Script::new(include_str!("lua/record_revoked.lua")),
        }
    }
}
