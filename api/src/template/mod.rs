//! OpenNebula templates as VM files.
//!
//! `oxvm run vm.tmpl` accepts the template syntax OpenNebula users already write
//! (`onetemplate create`, `onevm create`) and maps it onto [`VmConfig`]: NAME, MEMORY,
//! VCPU, CPU, OS, FEATURES, DISK, NIC and `RAW = [ TYPE = "oxvm", ... ]`. Attributes
//! that have no meaning here yet are returned as warnings, never dropped silently.
//! The mapping and the choices behind it are documented in
//! `docs/opennebula-templates.md`.
//!
//! Layers: [`parse`] (text → [`Template`]), `map*` (template → config), `vm_file`
//! (reading a file of either format).

mod ast;
mod error;
mod map;
mod map_disk;
mod map_nic;
mod map_os;
mod parse;
mod values;
mod vm_file;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

pub use ast::{Attribute, Member, Pos, Scalar, Template, Value};
pub use error::TemplateError;
pub use parse::parse;
pub use vm_file::{
    detect_format, load_vm_file, read_vm_file, Paths, VmFile, VmFileError, VmFileFormat,
};

use crate::VmConfig;

/// Something in the template that was not mapped (or mapped approximately), with the
/// line it is on and the attribute it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub pos: Pos,
    /// `CONTEXT`, `DISK[0]/CACHE`, `NIC[1]` (then the message lists the members).
    pub attribute: String,
    pub message: String,
}

impl Warning {
    pub(crate) fn new(pos: Pos, attribute: &str, message: impl Into<String>) -> Self {
        Warning {
            pos,
            attribute: attribute.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {}: {}",
            self.pos.line, self.attribute, self.message
        )
    }
}

/// Template values that have no place in [`VmConfig`] yet but are worth keeping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateExtras {
    /// CPU: the VM's share of a physical CPU (OpenNebula turns it into cgroup CPU
    /// shares: `CPU = 0.5` weighs half of `CPU = 1`). A value that is not a positive
    /// number is a warning instead.
    pub cpu: Option<f64>,
    /// DISK TARGET per disk id, in DISK order. The guest names its disks itself, so
    /// these are informational (a warning says when TARGET disagrees with the bus).
    pub disk_targets: Vec<(String, String)>,
}

/// Everything a template converts to.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// Validated; relative paths resolved against the `base` given.
    pub config: VmConfig,
    pub extras: TemplateExtras,
    pub warnings: Vec<Warning>,
}

/// Parse a template and map it to a validated [`VmConfig`]. Relative paths (KERNEL,
/// INITRD, DISK SOURCE) resolve against `base`, as in a JSON VM file; an empty `base`
/// leaves them as written.
pub fn parse_template(text: &str, base: &Path) -> Result<(VmConfig, Vec<Warning>), TemplateError> {
    let c = convert_template(text, base)?;
    Ok((c.config, c.warnings))
}

/// [`parse_template`], also returning the [`TemplateExtras`].
pub fn convert_template(text: &str, base: &Path) -> Result<Converted, TemplateError> {
    let template = parse(text)?;
    let mut c = map::map(&template)?;
    c.config.resolve_paths(base);
    Ok(c)
}
