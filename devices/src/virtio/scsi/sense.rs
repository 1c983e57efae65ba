//! SCSI status codes and fixed-format sense data (SPC-4 §4.5.3).
//!
//! The device reports errors as CHECK CONDITION with autosense: the sense bytes go in
//! the virtio response itself, so there is never a pending sense for REQUEST SENSE to
//! fetch. Only the fixed format (response code 0x70) is produced; Linux and every other
//! initiator accept it, and descriptor format would only matter for LBAs past 2^32 in
//! the INFORMATION field, which we then just leave unset.

/// SCSI status byte values (SAM-5 §5.3).
pub const STATUS_GOOD: u8 = 0x00;
pub const STATUS_CHECK_CONDITION: u8 = 0x02;

/// Length of the fixed-format sense data we produce.
pub const FIXED_SENSE_LEN: usize = 18;

/// Sense keys used by this device (SPC-4 table 49).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SenseKey {
    NoSense = 0x0,
    MediumError = 0x3,
    IllegalRequest = 0x5,
    DataProtect = 0x7,
}

/// Additional sense code / qualifier pairs (SPC-4 table D.1).
pub mod asc {
    pub const NO_ADDITIONAL_SENSE: (u8, u8) = (0x00, 0x00);
    pub const WRITE_ERROR: (u8, u8) = (0x0C, 0x00);
    pub const UNRECOVERED_READ_ERROR: (u8, u8) = (0x11, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: (u8, u8) = (0x1A, 0x00);
    pub const INVALID_COMMAND_OPERATION_CODE: (u8, u8) = (0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: (u8, u8) = (0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: (u8, u8) = (0x24, 0x00);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: (u8, u8) = (0x26, 0x00);
    pub const WRITE_PROTECTED: (u8, u8) = (0x27, 0x00);
    pub const SPACE_ALLOCATION_FAILED_WRITE_PROTECT: (u8, u8) = (0x27, 0x07);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: (u8, u8) = (0x39, 0x00);
}

/// Sense data of one failed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: u8,
    pub ascq: u8,
    /// INFORMATION field (the failing LBA for medium errors); only set when it fits in
    /// the 32 bits of the fixed format.
    pub information: Option<u32>,
    /// Sense-key-specific field pointer for ILLEGAL REQUEST: which byte of the CDB
    /// (`in_cdb`) or of the parameter list was wrong. Lets the guest log say exactly why.
    pub field: Option<FieldPointer>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldPointer {
    pub in_cdb: bool,
    pub byte: u16,
}

impl Sense {
    pub const fn new(key: SenseKey, (asc, ascq): (u8, u8)) -> Self {
        Self {
            key,
            asc,
            ascq,
            information: None,
            field: None,
        }
    }

    pub const fn no_sense() -> Self {
        Self::new(SenseKey::NoSense, asc::NO_ADDITIONAL_SENSE)
    }

    pub const fn invalid_opcode() -> Self {
        Self::new(
            SenseKey::IllegalRequest,
            asc::INVALID_COMMAND_OPERATION_CODE,
        )
    }

    pub const fn lba_out_of_range() -> Self {
        Self::new(SenseKey::IllegalRequest, asc::LBA_OUT_OF_RANGE)
    }

    /// INVALID FIELD IN CDB, pointing at CDB byte `byte`.
    pub const fn invalid_field_in_cdb(byte: u16) -> Self {
        let mut s = Self::new(SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB);
        s.field = Some(FieldPointer { in_cdb: true, byte });
        s
    }

    /// INVALID FIELD IN PARAMETER LIST, pointing at parameter-list byte `byte`.
    pub const fn invalid_field_in_param_list(byte: u16) -> Self {
        let mut s = Self::new(
            SenseKey::IllegalRequest,
            asc::INVALID_FIELD_IN_PARAMETER_LIST,
        );
        s.field = Some(FieldPointer {
            in_cdb: false,
            byte,
        });
        s
    }

    pub const fn parameter_list_length_error() -> Self {
        Self::new(SenseKey::IllegalRequest, asc::PARAMETER_LIST_LENGTH_ERROR)
    }

    pub const fn saving_parameters_not_supported() -> Self {
        Self::new(
            SenseKey::IllegalRequest,
            asc::SAVING_PARAMETERS_NOT_SUPPORTED,
        )
    }

    pub const fn write_protected() -> Self {
        Self::new(SenseKey::DataProtect, asc::WRITE_PROTECTED)
    }

    /// A thin-provisioned backend ran out of host space: SBC-3 §4.7.3.6 says to report
    /// it this way, and Linux then fails the write instead of retrying forever.
    pub const fn space_allocation_failed() -> Self {
        Self::new(
            SenseKey::DataProtect,
            asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
        )
    }

    /// UNRECOVERED READ ERROR at `lba`.
    pub fn read_error(lba: u64) -> Self {
        Self::new(SenseKey::MediumError, asc::UNRECOVERED_READ_ERROR).with_lba(lba)
    }

    /// WRITE ERROR at `lba` (also used for failed flushes and discards).
    pub fn write_error(lba: u64) -> Self {
        Self::new(SenseKey::MediumError, asc::WRITE_ERROR).with_lba(lba)
    }

    fn with_lba(mut self, lba: u64) -> Self {
        self.information = u32::try_from(lba).ok();
        self
    }

    /// Encode as fixed-format sense data (SPC-4 table 48).
    pub fn to_fixed(self) -> [u8; FIXED_SENSE_LEN] {
        let mut b = [0u8; FIXED_SENSE_LEN];
        // Response code 0x70: current error; bit 7 (VALID) says INFORMATION is meaningful.
        b[0] = 0x70 | if self.information.is_some() { 0x80 } else { 0 };
        b[2] = self.key as u8;
        if let Some(info) = self.information {
            b[3..7].copy_from_slice(&info.to_be_bytes());
        }
        // ADDITIONAL SENSE LENGTH: bytes after byte 7.
        b[7] = (FIXED_SENSE_LEN - 8) as u8;
        b[12] = self.asc;
        b[13] = self.ascq;
        if let Some(f) = self.field {
            // SKSV | C/D; BPV stays 0 (no bit pointer).
            b[15] = 0x80 | if f.in_cdb { 0x40 } else { 0 };
            b[16..18].copy_from_slice(&f.byte.to_be_bytes());
        }
        b
    }
}
