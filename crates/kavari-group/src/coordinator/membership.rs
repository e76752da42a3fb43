//! [`Membership`]: who this member is to the coordinator. The member id
//! and the generation are one state, so that neither can be reset without
//! the other.

use crate::Generation;

/// No id yet, an id outside a generation, or a generation (with its id).
#[derive(Debug, Default)]
pub(super) enum Membership {
    /// No member id: a first join, or the coordinator forgot this member
    /// (`UNKNOWN_MEMBER_ID`), or it stepped aside.
    #[default]
    New,
    /// A member id the coordinator gave, outside a generation (joining, or
    /// the generation was lost).
    Known(String),
    /// In a generation, which holds the member id.
    InGeneration(Generation),
}

impl Membership {
    /// The member id; empty when new.
    pub(super) fn member_id(&self) -> &str {
        match self {
            Membership::New => "",
            Membership::Known(id) => id,
            Membership::InGeneration(g) => &g.member_id,
        }
    }

    /// The generation, when in one.
    pub(super) fn generation(&self) -> Option<&Generation> {
        match self {
            Membership::InGeneration(g) => Some(g),
            Membership::New | Membership::Known(_) => None,
        }
    }

    /// The generation id, or -1 outside a generation (as the protocol
    /// wants it).
    pub(super) fn generation_id(&self) -> i32 {
        self.generation().map_or(-1, |g| g.generation_id)
    }

    /// The coordinator gave (or confirmed) `member_id` in a JoinGroup
    /// answer. The generation this member is in stays until the join's
    /// SyncGroup replaces it, as long as the id is its own.
    pub(super) fn identified(&mut self, member_id: String) {
        if self.member_id() != member_id {
            *self = Membership::Known(member_id);
        }
    }

    /// SyncGroup answered: this member is in `generation`.
    pub(super) fn enter(&mut self, generation: Generation) {
        *self = Membership::InGeneration(generation);
    }

    /// Out of the generation (lost, or left); the member id stays for the
    /// next join.
    pub(super) fn leave_generation(&mut self) {
        if let Membership::InGeneration(g) = self {
            *self = Membership::Known(std::mem::take(&mut g.member_id));
        }
    }

    /// The id is dropped: the next join is a new member's.
    pub(super) fn forget(&mut self) {
        *self = Membership::New;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(id: i32, member: &str) -> Generation {
        Generation {
            generation_id: id,
            member_id: member.into(),
            group_instance_id: None,
        }
    }

    #[test]
    fn the_id_and_the_generation_change_together() {
        let mut m = Membership::default();
        assert_eq!((m.member_id(), m.generation_id()), ("", -1));
        m.identified("m-1".into());
        assert_eq!((m.member_id(), m.generation()), ("m-1", None));
        m.enter(generation(4, "m-1"));
        assert_eq!((m.member_id(), m.generation_id()), ("m-1", 4));
        // A JoinGroup answer with the same id keeps the generation until
        // SyncGroup replaces it; another id ends it.
        m.identified("m-1".into());
        assert_eq!(m.generation_id(), 4);
        m.identified("m-2".into());
        assert_eq!((m.member_id(), m.generation()), ("m-2", None));
        m.enter(generation(5, "m-2"));
        m.leave_generation();
        assert_eq!((m.member_id(), m.generation()), ("m-2", None));
        m.forget();
        assert_eq!((m.member_id(), m.generation_id()), ("", -1));
    }
}
