//! The core's errors as the package's exception classes (`billing_gateway.errors`).

use crate::error::Error;
use pyo3::PyErr;

pyo3::import_exception!(billing_gateway.errors, InvalidEvent);
pyo3::import_exception!(billing_gateway.errors, InvalidAmount);
pyo3::import_exception!(billing_gateway.errors, InvalidSnapshot);
pyo3::import_exception!(billing_gateway.errors, InvalidArgument);
pyo3::import_exception!(billing_gateway.errors, UnknownReservation);
pyo3::import_exception!(billing_gateway.errors, ParkingFull);
pyo3::import_exception!(billing_gateway.errors, InvalidPolicy);

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        match e {
            Error::InvalidEvent(m) => InvalidEvent::new_err(m),
            Error::InvalidAmount(m) => InvalidAmount::new_err(m),
            Error::InvalidSnapshot(m) => InvalidSnapshot::new_err(m),
            Error::InvalidArgument(m) => InvalidArgument::new_err(m),
            Error::UnknownReservation(m, why) => UnknownReservation::new_err((m, why.as_str())),
            Error::ParkingFull(m) => ParkingFull::new_err(m),
            Error::InvalidPolicy(p) => {
                let message = Error::InvalidPolicy(p.clone()).to_string();
                let problem = format!("{}: {}", p.field, p.problem);
                InvalidPolicy::new_err((message, p.policy_id, problem, p.position))
            }
        }
    }
}
