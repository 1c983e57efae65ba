//! Reading typed values out of attributes, with errors that name the attribute and
//! point at the value's line and column.

use super::ast::{Attribute, Member, Pos, Scalar, Value};
use super::{TemplateError, Warning};

/// The members of one vector attribute, looked up by name. Tracks which members were
/// read so that everything left over can be reported: nothing is dropped silently.
pub(super) struct Members<'a> {
    /// How errors name the vector: `OS`, `DISK[1]`.
    pub label: String,
    pub pos: Pos,
    items: Vec<(&'a Member, bool)>,
}

impl<'a> Members<'a> {
    /// Fails on a member given twice: OpenNebula silently keeps the first one, which is
    /// never what the author of `CACHE = none, ..., CACHE = writeback` meant.
    pub fn new(attr: &'a Attribute, label: String) -> Result<Self, TemplateError> {
        let Value::Vector(members) = &attr.value else {
            return Err(TemplateError::invalid(
                attr.pos,
                label,
                "must be a vector attribute: NAME = [ KEY = value, ... ]",
            ));
        };
        for (i, m) in members.iter().enumerate() {
            if let Some(first) = members[..i].iter().find(|f| f.name == m.name) {
                return Err(TemplateError::invalid(
                    m.pos,
                    format!("{label}/{}", m.name),
                    format!("given twice (first at line {})", first.pos.line),
                ));
            }
        }
        Ok(Members {
            label,
            pos: attr.pos,
            items: members.iter().map(|m| (m, false)).collect(),
        })
    }

    /// The member `name` (upper-case), marked as used. An empty value counts as
    /// absent, as in OpenNebula (which writes `INITRD = ""` for "no initrd").
    pub fn get(&mut self, name: &str) -> Option<Field<'a>> {
        let label = &self.label;
        let (m, used) = self.items.iter_mut().find(|(m, _)| m.name == name)?;
        *used = true;
        if m.value.text.trim().is_empty() {
            return None;
        }
        Some(Field {
            attribute: format!("{label}/{name}"),
            value: &m.value,
        })
    }

    /// Whether `name` is present (does not mark it used).
    pub fn has(&self, name: &str) -> bool {
        self.items.iter().any(|(m, _)| m.name == name)
    }

    /// One warning listing every member nobody read.
    pub fn warn_unused(&self, warnings: &mut Vec<Warning>) {
        let unused: Vec<&str> = self
            .items
            .iter()
            .filter(|(_, used)| !used)
            .map(|(m, _)| m.name.as_str())
            .collect();
        if !unused.is_empty() {
            warnings.push(Warning::new(
                self.pos,
                &self.label,
                format!("not supported yet, ignored: {}", unused.join(", ")),
            ));
        }
    }
}

/// A value together with the name errors should use for it (`DISK[0]/CACHE`).
#[derive(Clone)]
pub(super) struct Field<'a> {
    pub attribute: String,
    pub value: &'a Scalar,
}

impl<'a> Field<'a> {
    /// A top-level single attribute (`MEMORY = 512`); a vector is an error.
    pub fn single(attr: &'a Attribute) -> Result<Self, TemplateError> {
        match &attr.value {
            Value::Single(value) => Ok(Field {
                attribute: attr.name.clone(),
                value,
            }),
            Value::Vector(_) => Err(TemplateError::invalid(
                attr.pos,
                &attr.name,
                "must be a single value, not a vector",
            )),
        }
    }

    pub fn text(&self) -> &'a str {
        self.value.text.trim()
    }

    pub fn pos(&self) -> Pos {
        self.value.pos
    }

    pub fn error(&self, message: impl Into<String>) -> TemplateError {
        TemplateError::invalid(self.value.pos, &self.attribute, message)
    }

    pub fn warning(&self, message: impl Into<String>) -> Warning {
        Warning::new(self.value.pos, &self.attribute, message)
    }

    /// A non-empty string.
    pub fn non_empty(&self) -> Result<&'a str, TemplateError> {
        let t = self.text();
        if t.is_empty() {
            return Err(self.error("must not be empty"));
        }
        Ok(t)
    }

    pub fn u64(&self) -> Result<u64, TemplateError> {
        self.text()
            .parse::<u64>()
            .map_err(|_| self.error(format!("{:?} is not a whole number ≥ 0", self.value.text)))
    }

    /// OpenNebula's booleans: YES / NO, any case.
    pub fn yes_no(&self) -> Result<bool, TemplateError> {
        match self.text().to_ascii_lowercase().as_str() {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => Err(self.error(format!("{:?} is not YES or NO", self.value.text))),
        }
    }

    /// One of `choices` (matched case-insensitively).
    pub fn choice<T: Copy>(&self, choices: &[(&str, T)]) -> Result<T, TemplateError> {
        let t = self.text().to_ascii_lowercase();
        choices
            .iter()
            .find(|(name, _)| *name == t)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                self.error(format!(
                    "{:?} is not supported (expected one of: {})",
                    self.value.text,
                    names.join(", ")
                ))
            })
    }
}
