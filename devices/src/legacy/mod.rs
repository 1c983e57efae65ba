//! Legacy PC devices behind 8-bit I/O ports.

mod byte_io;
pub mod cmos;
pub mod i8042;
pub mod serial;

pub use cmos::{Cmos, CmosClock};
pub use i8042::I8042;
pub use serial::{SerialDevice, SerialInputError};
