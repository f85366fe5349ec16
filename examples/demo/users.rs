//! The demo's two users and their roles, which `PUT /users/{user}/role`
//! changes at run time (in this process only: each instance has its own).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use serde::{Deserialize, Serialize};

/// What the demo puts in its access tokens besides the registered claims.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoClaims {
    pub role: Role,
    /// Space-separated (RFC 9068).
    pub scope: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    fn scope(self) -> &'static str {
        match self {
            Role::Admin => "profile admin",
            Role::User => "profile",
        }
    }
}

/// The user table: name → (password, role).
#[derive(Clone)]
pub struct Users(Arc<RwLock<HashMap<String, (&'static str, Role)>>>);

impl Users {
    pub fn new() -> Self {
        let users = [("alice".to_owned(), ("alice-pw", Role::Admin)), ("bob".to_owned(), ("bob-pw", Role::User))];
        Self(Arc::new(RwLock::new(users.into_iter().collect())))
    }

    /// The claims of `user`, if they exist and `password` is theirs (or no
    /// password is asked for).
    pub fn claims(&self, user: &str, password: Option<&str>) -> Option<DemoClaims> {
        let users = self.0.read().unwrap_or_else(|e| e.into_inner());
        let (stored, role) = users.get(user)?;
        if password.is_some_and(|password| password != *stored) {
            return None;
        }
        Some(DemoClaims { role: *role, scope: role.scope().to_owned() })
    }

    /// Changes `user`'s role; `false` for an unknown user.
    pub fn set_role(&self, user: &str, role: Role) -> bool {
        let mut users = self.0.write().unwrap_or_else(|e| e.into_inner());
        users.get_mut(user).map(|(_, old)| *old = role).is_some()
    }
}
