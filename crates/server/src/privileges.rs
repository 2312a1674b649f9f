//! Switching to an unprivileged user and group once the sockets are bound (through `nix`,
//! whose lookups grow their buffer on `ERANGE`, so users in large groups resolve).

use nix::unistd::{Gid, Group, Uid, User};

/// Why the user or group could not be resolved or taken on.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// No such user in the user database.
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    /// No such group in the group database.
    #[error("no group named {0:?}")]
    NoSuchGroup(String),
    /// The user or group database could not be read.
    #[error("cannot look up {what} {name:?}: {source}")]
    Lookup {
        /// `user` or `group`.
        what: &'static str,
        /// The name looked up.
        name: String,
        /// Cause.
        source: nix::Error,
    },
    /// `setgroups`, `setgid` or `setuid` failed (usually EPERM: not running as root).
    #[error("{call} failed: {source}")]
    Switch {
        /// The call that failed.
        call: &'static str,
        /// Cause.
        source: nix::Error,
    },
    /// `setuid` returned success but the ids did not change.
    #[error("setuid did not take effect")]
    NotEffective,
}

/// What [`drop_privileges`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivilegeChange {
    /// Neither a user nor a group was asked for.
    NotAsked,
    /// The process already runs as the user and group asked for (systemd's `User=`, say):
    /// nothing was changed.
    AlreadyThere,
    /// Supplementary groups were cleared to the one group, then the group and user were set.
    Switched,
}

/// Looks `name` up with `find` (`User::from_name` or `Group::from_name`); `what` names the
/// database in errors.
fn lookup<T>(
    what: &'static str,
    name: &str,
    find: impl FnOnce(&str) -> nix::Result<Option<T>>,
    missing: impl FnOnce(String) -> PrivilegeError,
) -> Result<T, PrivilegeError> {
    find(name)
        .map_err(|source| PrivilegeError::Lookup {
            what,
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| missing(name.to_owned()))
}

/// The user and group ids that `user` and `group` name: an empty user keeps the user; an
/// empty group takes the user's primary group, or keeps the group when no user is named.
pub fn resolve(user: &str, group: &str) -> Result<(Option<Uid>, Option<Gid>), PrivilegeError> {
    let user_ids = if user.is_empty() {
        None
    } else {
        let entry = lookup("user", user, User::from_name, PrivilegeError::NoSuchUser)?;
        Some((entry.uid, entry.gid))
    };
    let gid = if group.is_empty() {
        user_ids.map(|(_, gid)| gid)
    } else {
        Some(
            lookup(
                "group",
                group,
                Group::from_name,
                PrivilegeError::NoSuchGroup,
            )?
            .gid,
        )
    };
    Ok((user_ids.map(|(uid, _)| uid), gid))
}

/// Switches to `user` and/or `group` (names; see [`resolve`]): supplementary groups are
/// cleared to the one group, then `setgid`, then `setuid` (which glibc applies to every thread).
/// When the real and effective ids already are the ones asked for, nothing is changed: an
/// unprivileged process cannot call `setgroups`, and being there already is not an error.
pub fn drop_privileges(user: &str, group: &str) -> Result<PrivilegeChange, PrivilegeError> {
    if user.is_empty() && group.is_empty() {
        return Ok(PrivilegeChange::NotAsked);
    }
    let (uid, gid) = resolve(user, group)?;
    let uid_there = uid.is_none_or(|u| nix::unistd::getuid() == u && nix::unistd::geteuid() == u);
    let gid_there = gid.is_none_or(|g| nix::unistd::getgid() == g && nix::unistd::getegid() == g);
    if uid_there && gid_there {
        return Ok(PrivilegeChange::AlreadyThere);
    }
    let switch = |call| move |source| PrivilegeError::Switch { call, source };
    if let Some(gid) = gid {
        nix::unistd::setgroups(&[gid]).map_err(switch("setgroups"))?;
        nix::unistd::setgid(gid).map_err(switch("setgid"))?;
    }
    if let Some(uid) = uid {
        nix::unistd::setuid(uid).map_err(switch("setuid"))?;
        if nix::unistd::getuid() != uid || nix::unistd::geteuid() != uid {
            return Err(PrivilegeError::NotEffective);
        }
    }
    Ok(PrivilegeChange::Switched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_resolve_by_name() {
        assert_eq!(
            resolve("root", "").unwrap(),
            (Some(Uid::from_raw(0)), Some(Gid::from_raw(0)))
        );
        assert_eq!(resolve("", "root").unwrap(), (None, Some(Gid::from_raw(0))));
        assert_eq!(resolve("", "").unwrap(), (None, None));
        assert!(matches!(
            resolve("no-such-user-fjord", ""),
            Err(PrivilegeError::NoSuchUser(n)) if n == "no-such-user-fjord"
        ));
        assert!(matches!(
            resolve("", "no-such-group-fjord"),
            Err(PrivilegeError::NoSuchGroup(_))
        ));
        assert!(resolve("nul\0inside", "").is_err());
    }

    /// The process's own user and group: a no-op, whatever the privileges.
    #[test]
    fn switching_to_the_current_user_and_group_changes_nothing() {
        let me = User::from_uid(nix::unistd::geteuid()).unwrap().unwrap();
        let group = Group::from_gid(nix::unistd::getegid()).unwrap().unwrap();
        if nix::unistd::getuid() != me.uid || nix::unistd::getgid() != group.gid {
            eprintln!("real and effective ids differ: nothing to check");
            return;
        }
        assert_eq!(
            drop_privileges(&me.name, &group.name).unwrap(),
            PrivilegeChange::AlreadyThere
        );
        assert_eq!(drop_privileges("", "").unwrap(), PrivilegeChange::NotAsked);
    }
}
