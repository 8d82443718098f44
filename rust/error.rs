//! Every way the core refuses a request. Each maps to one Python exception class.

use crate::spelling::spelled_enum;

/// Every way the core refuses a request. The message says what and names the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    InvalidEvent(String),
    InvalidAmount(String),
    InvalidSnapshot(String),
    InvalidArgument(String),
    /// A reservation id that names no outstanding hold, and which case it is.
    UnknownReservation(String, Unresolvable),
    ParkingFull(String),
    InvalidPolicy(Box<PolicyError>),
}

/// Why a definition is not a policy: the field (`match_expression`, `targets[1].weight`,
/// ...), the problem, and for expressions the character offset it was found at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub policy_id: String,
    pub field: String,
    pub problem: String,
    pub position: Option<usize>,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)?;
        if let Some(p) = self.position {
            write!(f, " (at character {p})")?;
        }
        Ok(())
    }
}

spelled_enum! {
    /// Why a reservation id names no outstanding hold (`UnknownReservation.reason`).
    pub enum Unresolvable {
        /// Never issued, or resolved longer ago than the table remembers.
        Unknown = "unknown",
        /// Its TTL passed: the hold was released.
        Expired = "expired",
        Committed = "committed",
        Released = "released",
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidEvent(m)
            | Error::InvalidAmount(m)
            | Error::InvalidSnapshot(m)
            | Error::InvalidArgument(m)
            | Error::UnknownReservation(m, _)
            | Error::ParkingFull(m) => f.write_str(m),
            Error::InvalidPolicy(p) => write!(f, "routing policy {:?}: {p}", p.policy_id),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The error for reservation `id`, which names no outstanding hold, by case.
    pub fn unknown_reservation(id: impl std::fmt::Display, why: Unresolvable) -> Self {
        let message = match why {
            Unresolvable::Unknown => format!(
                "reservation {id} is unknown: never issued, or resolved longer ago than \
                 this gateway remembers"
            ),
            Unresolvable::Expired => format!("reservation {id} expired"),
            Unresolvable::Committed => format!("reservation {id} was already committed"),
            Unresolvable::Released => format!("reservation {id} was already released"),
        };
        Error::UnknownReservation(message, why)
    }
}
