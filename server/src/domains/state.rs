//! A domain's life, as a pure state machine (DESIGN.md, data flow step 2):
//!
//! ```text
//!  pending_payment ──paid──► provisioning ──applied──► active ◄──resumed── suspended
//!        │                        │                      │ └──suspended──►   │
//!        └─abandoned──► deleted   └───────────┬──────────┴───────────────────┘
//!                                         deleted by the customer, or retention over
//!                                              ▼
//!                                          deleting ──removed──► deleted
//! ```
//!
//! A failed payment starts a grace period (the domain stays active); when it runs out the
//! domain is suspended (logins refused, data kept). A cancelled subscription suspends it
//! too, and starts the retention period during which the customer can export the data;
//! after it the domain is deleted from its node. Every other pair is refused, so a late or
//! replayed event cannot move a domain backwards.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainState {
    PendingPayment,
    Provisioning,
    Active,
    Suspended,
    Deleting,
    Deleted,
}

impl DomainState {
    pub const ALL: [DomainState; 6] = [
        Self::PendingPayment,
        Self::Provisioning,
        Self::Active,
        Self::Suspended,
        Self::Deleting,
        Self::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the domain has (or is getting) a place on a node.
    pub fn is_placed(self) -> bool {
        matches!(self, Self::Provisioning | Self::Active | Self::Suspended)
    }
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A free plan was chosen: no payment needed.
    OrderedFree,
    /// The first payment arrived (checkout completed).
    Paid,
    /// The checkout was abandoned or the order withdrawn before paying.
    Abandoned,
    /// The node confirmed the domain's spec.
    Applied,
    /// The grace period after a failed payment ran out.
    GraceExpired,
    /// An admin suspended the domain.
    SuspendedByAdmin,
    /// The subscription ended (cancelled, or unpaid to the end): suspended, data kept for
    /// the retention period.
    Cancelled,
    /// A later payment succeeded, or an admin resumed the domain.
    Resumed,
    /// The customer deleted the domain, or the retention period after cancellation ended.
    DeleteRequested,
    /// Every node that held the domain confirmed its removal.
    Removed,
}

/// A transition the machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a domain that is {from} cannot take the event {event:?}")]
pub struct Illegal {
    pub from: DomainState,
    pub event: Event,
}

/// The state after `event`, or why not. Events that change nothing in a state (a second
/// `Paid` for an active domain) are allowed and return the same state, so redelivered
/// webhooks are harmless.
pub fn next(from: DomainState, event: Event) -> Result<DomainState, Illegal> {
    use DomainState::*;
    use Event::*;
    let to = match (from, event) {
        (PendingPayment, OrderedFree | Paid) => Provisioning,
        (PendingPayment, Abandoned | DeleteRequested) => Deleted,
        (Provisioning, Paid) => Provisioning,
        (Provisioning, Applied) => Active,
        (Active, Applied | Paid | Resumed) => Active,
        (Active | Provisioning, GraceExpired | SuspendedByAdmin | Cancelled) => Suspended,
        (Suspended, GraceExpired | SuspendedByAdmin | Cancelled | Applied) => Suspended,
        (Suspended, Resumed | Paid) => Active,
        (Provisioning | Active | Suspended, DeleteRequested) => Deleting,
        (Deleting, DeleteRequested) => Deleting,
        (Deleting, Removed) => Deleted,
        _ => return Err(Illegal { from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::{DomainState::*, Event::*, *};

    const EVENTS: [Event; 10] = [
        OrderedFree,
        Paid,
        Abandoned,
        Applied,
        GraceExpired,
        SuspendedByAdmin,
        Cancelled,
        Resumed,
        DeleteRequested,
        Removed,
    ];

    /// Every (state, event) pair, against the table written out by hand.
    #[test]
    fn every_transition_is_the_one_the_table_gives() {
        let allowed: &[(DomainState, Event, DomainState)] = &[
            (PendingPayment, OrderedFree, Provisioning),
            (PendingPayment, Paid, Provisioning),
            (PendingPayment, Abandoned, Deleted),
            (PendingPayment, DeleteRequested, Deleted),
            (Provisioning, Paid, Provisioning),
            (Provisioning, Applied, Active),
            (Provisioning, GraceExpired, Suspended),
            (Provisioning, SuspendedByAdmin, Suspended),
            (Provisioning, Cancelled, Suspended),
            (Provisioning, DeleteRequested, Deleting),
            (Active, Applied, Active),
            (Active, Paid, Active),
            (Active, Resumed, Active),
            (Active, GraceExpired, Suspended),
            (Active, SuspendedByAdmin, Suspended),
            (Active, Cancelled, Suspended),
            (Active, DeleteRequested, Deleting),
            (Suspended, GraceExpired, Suspended),
            (Suspended, SuspendedByAdmin, Suspended),
            (Suspended, Cancelled, Suspended),
            (Suspended, Applied, Suspended),
            (Suspended, Resumed, Active),
            (Suspended, Paid, Active),
            (Suspended, DeleteRequested, Deleting),
            (Deleting, DeleteRequested, Deleting),
            (Deleting, Removed, Deleted),
        ];
        for from in DomainState::ALL {
            for event in EVENTS {
                let expected = allowed
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (next(from, event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from} + {event:?}"),
                    (Err(e), None) => assert_eq!(e, Illegal { from, event }),
                    (got, want) => panic!("{from} + {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn nothing_leaves_deleted_and_nothing_goes_back_to_pending_payment() {
        for event in EVENTS {
            assert!(next(Deleted, event).is_err(), "deleted + {event:?}");
            for from in DomainState::ALL {
                assert_ne!(next(from, event).ok(), Some(PendingPayment));
            }
        }
    }

    #[test]
    fn a_late_payment_cannot_revive_a_domain_being_deleted() {
        assert!(next(Deleting, Paid).is_err());
        assert!(next(Deleting, Resumed).is_err());
        assert!(next(Deleting, Applied).is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in DomainState::ALL {
            assert_eq!(DomainState::parse(s.as_str()), Some(s));
        }
        assert_eq!(DomainState::parse("gone"), None);
        // The database's list and this one agree.
        assert_eq!(
            DomainState::ALL.map(DomainState::as_str).to_vec(),
            crate::domains::db::STATES.to_vec()
        );
    }
}
