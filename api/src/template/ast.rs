//! The parsed form of an OpenNebula template: a list of attributes in file order.
//!
//! OpenNebula's own model (`Template`, `SingleAttribute`, `VectorAttribute`) is the
//! same: names are upper-cased, values are strings whose meaning depends on the
//! attribute, and an attribute may appear several times (DISK, NIC, ...). Positions are
//! kept on every node so the mapping can name the line of whatever it refuses.

/// A position in the template text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// A whole template, attributes in the order they were written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    pub attributes: Vec<Attribute>,
}

/// `NAME = value` or `NAME = [ K = V, ... ]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Upper-cased, as OpenNebula stores it (`disk` and `DISK` are the same attribute).
    pub name: String,
    /// Where the name starts.
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Single(Scalar),
    Vector(Vec<Member>),
}

/// One `K = V` inside a vector attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Upper-cased.
    pub name: String,
    pub pos: Pos,
    pub value: Scalar,
}

/// A value as written, with quotes removed and `\"` unescaped. OpenNebula has no typed
/// values: numbers, booleans (`yes`/`no`) and paths are all strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    pub text: String,
    /// Where the value starts (its opening quote when quoted). For an empty value
    /// (`NAME =` at the end of a line) the position of the `=`.
    pub pos: Pos,
}

impl Template {
    /// Every attribute called `name` (upper-case), in file order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Attribute> + 'a {
        self.attributes.iter().filter(move |a| a.name == name)
    }
}

impl Attribute {
    /// The members of a vector attribute; `None` for a single value.
    pub fn members(&self) -> Option<&[Member]> {
        match &self.value {
            Value::Vector(m) => Some(m),
            Value::Single(_) => None,
        }
    }
}
