use super::ast::Pos;
use crate::ConfigError;

/// Why a template was refused. Every variant that comes from the text carries its line
/// and column and names the attribute (`DISK[1]/CACHE`: the second DISK vector's CACHE
/// member), so the operator can go straight to the spot.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The text is not valid template syntax.
    #[error("line {}, column {}: {}{}", .pos.line, .pos.column, in_attribute(.attribute), .message)]
    Syntax {
        pos: Pos,
        /// The attribute being read, when the parser had got as far as its name.
        attribute: Option<String>,
        message: String,
    },
    /// Valid syntax, but a value (or combination) oxvm cannot run.
    #[error("line {}, column {}: {}: {}", .pos.line, .pos.column, .attribute, .message)]
    Invalid {
        pos: Pos,
        attribute: String,
        message: String,
    },
    /// A required attribute is absent (so there is no line to point at).
    #[error("{attribute} is missing: {message}")]
    Missing { attribute: String, message: String },
    /// The converted config failed a check that could not be traced back to one
    /// attribute (the message names the VM-file field).
    #[error("the converted VM config is invalid: {0}")]
    Config(ConfigError),
}

fn in_attribute(a: &Option<String>) -> String {
    match a {
        Some(a) => format!("in {a}: "),
        None => String::new(),
    }
}

impl TemplateError {
    pub(crate) fn syntax(pos: Pos, attribute: Option<&str>, message: impl Into<String>) -> Self {
        TemplateError::Syntax {
            pos,
            attribute: attribute.map(str::to_string),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(
        pos: Pos,
        attribute: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        TemplateError::Invalid {
            pos,
            attribute: attribute.into(),
            message: message.into(),
        }
    }

    pub(crate) fn missing(attribute: impl Into<String>, message: impl Into<String>) -> Self {
        TemplateError::Missing {
            attribute: attribute.into(),
            message: message.into(),
        }
    }

    /// The line the error points at, if it has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            TemplateError::Syntax { pos, .. } | TemplateError::Invalid { pos, .. } => {
                Some(pos.line)
            }
            TemplateError::Missing { .. } | TemplateError::Config(_) => None,
        }
    }
}
