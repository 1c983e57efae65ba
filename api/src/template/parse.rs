//! Lexer and parser for OpenNebula template syntax.
//!
//! The accepted language is OpenNebula's (`src/parsers/template_parser.l` and
//! `template_syntax.y`), with friendlier errors and two lenient spots:
//!
//! ```text
//! # comment to the end of the line (anywhere outside quotes)
//! NAME   = "web 1"                 quoted: may span lines; \" is a quote, nothing
//! MEMORY = 512                     else is an escape (as in OpenNebula)
//! EMPTY  =                         `=` at the end of a line: the empty value
//! DISK   = [ SOURCE = "a.img",     vector: members separated by commas, newlines
//!            CACHE  = none, ]      anywhere; a trailing comma is accepted
//! DISK   = [ SOURCE = "b.img" ]    attributes may repeat
//! ```
//!
//! Names are letters, digits and `_`, upper-cased (OpenNebula is case-insensitive about
//! names). A bare value is any run of characters other than blanks, `=`, `#`, `,`, `[`
//! and `]`. Lenient compared with OpenNebula: a trailing comma in a vector, and `[` on
//! the line after `=`.

use super::ast::{Attribute, Member, Pos, Scalar, Template, Value};
use super::TemplateError;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Eq,
    Comma,
    Open,
    Close,
    /// A lexical error (unterminated string). Kept as a token so the parser can report
    /// it with the name of the attribute it was reading.
    Bad(String),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: Pos,
    /// Line of the token's last character (quoted strings can span lines).
    end_line: usize,
}

/// Parse template text. Never panics; every error has a line and column.
pub fn parse(text: &str) -> Result<Template, TemplateError> {
    let mut p = Parser {
        toks: lex(text),
        i: 0,
    };
    let mut attributes = Vec::new();
    while p.peek().is_some() {
        attributes.push(p.attribute()?);
    }
    Ok(Template { attributes })
}

fn is_word_char(c: char) -> bool {
    !(c.is_whitespace() || matches!(c, '=' | '#' | ',' | '[' | ']'))
}

/// Split the text into tokens; stops after the first bad token.
fn lex(text: &str) -> Vec<Token> {
    let mut toks = Vec::new();
    let mut it = text.chars().peekable();
    let (mut line, mut column) = (1usize, 1usize);
    while let Some(&c) = it.peek() {
        let pos = Pos { line, column };
        let simple = match c {
            '=' => Some(Tok::Eq),
            ',' => Some(Tok::Comma),
            '[' => Some(Tok::Open),
            ']' => Some(Tok::Close),
            _ => None,
        };
        if let Some(tok) = simple {
            it.next();
            column += 1;
            toks.push(Token {
                tok,
                pos,
                end_line: line,
            });
        } else if c == '\n' {
            it.next();
            line += 1;
            column = 1;
        } else if c.is_whitespace() {
            it.next();
            column += 1;
        } else if c == '#' {
            while it.peek().is_some_and(|&c| c != '\n') {
                it.next();
            }
        } else if c == '"' {
            it.next();
            column += 1;
            let mut s = String::new();
            let mut closed = false;
            while let Some(c) = it.next() {
                column += 1;
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    // OpenNebula unescapes only \" (its `unescape()`); a backslash
                    // before anything else is kept, so Windows-style paths and regexes
                    // in user attributes survive unchanged.
                    '\\' if it.peek() == Some(&'"') => {
                        it.next();
                        column += 1;
                        s.push('"');
                    }
                    '\n' => {
                        line += 1;
                        column = 1;
                        s.push(c);
                    }
                    c => s.push(c),
                }
            }
            if !closed {
                toks.push(Token {
                    tok: Tok::Bad(format!(
                        "the quoted string starting at line {}, column {} is never closed",
                        pos.line, pos.column
                    )),
                    pos,
                    end_line: line,
                });
                return toks;
            }
            toks.push(Token {
                tok: Tok::Quoted(s),
                pos,
                end_line: line,
            });
        } else {
            let mut s = String::new();
            while let Some(&c) = it.peek() {
                if !is_word_char(c) {
                    break;
                }
                s.push(c);
                it.next();
                column += 1;
            }
            toks.push(Token {
                tok: Tok::Word(s),
                pos,
                end_line: line,
            });
        }
    }
    toks
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Quoted(_) => "a quoted string".into(),
        Tok::Eq => "`=`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Open => "`[`".into(),
        Tok::Close => "`]`".into(),
        Tok::Bad(m) => m.clone(),
    }
}

const QUOTE_HINT: &str = "quote values that contain blanks, `=`, `,`, `[`, `]` or `#`";

struct Parser {
    toks: Vec<Token>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.i)
    }

    fn peek2(&self) -> Option<&Token> {
        self.toks.get(self.i + 1)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.i).cloned();
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    /// Where errors about the end of the text point: just after the last token.
    fn end_pos(&self) -> Pos {
        self.toks
            .last()
            .map(|t| Pos {
                line: t.end_line,
                column: t.pos.column + 1,
            })
            .unwrap_or(Pos { line: 1, column: 1 })
    }

    /// An error for an unexpected token; a lexer error is reported as itself.
    fn unexpected(t: &Token, ctx: Option<&str>, what: &str) -> TemplateError {
        match &t.tok {
            Tok::Bad(m) => TemplateError::syntax(t.pos, ctx, m.clone()),
            other => TemplateError::syntax(
                t.pos,
                ctx,
                format!("expected {what}, found {}", describe(other)),
            ),
        }
    }

    /// A name token: letters, digits and `_`, returned upper-cased.
    fn name(t: &Token, ctx: Option<&str>, what: &str) -> Result<String, TemplateError> {
        match &t.tok {
            Tok::Word(w) if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                Ok(w.to_ascii_uppercase())
            }
            Tok::Word(w) => Err(TemplateError::syntax(
                t.pos,
                ctx,
                format!("`{w}` is not a valid {what} (letters, digits and `_` only)"),
            )),
            _ => Err(Self::unexpected(t, ctx, what)),
        }
    }

    fn expect_eq(&mut self, ctx: &str) -> Result<Pos, TemplateError> {
        match self.next() {
            Some(Token {
                tok: Tok::Eq, pos, ..
            }) => Ok(pos),
            Some(t) => Err(Self::unexpected(&t, Some(ctx), "`=` after the name")),
            None => Err(TemplateError::syntax(
                self.end_pos(),
                Some(ctx),
                "expected `=` after the name, found the end of the file",
            )),
        }
    }

    fn attribute(&mut self) -> Result<Attribute, TemplateError> {
        let Some(t) = self.next() else {
            return Err(TemplateError::syntax(self.end_pos(), None, "empty"));
        };
        let name = Self::name(&t, None, "attribute name")?;
        let eq = self.expect_eq(&name)?;
        let value = match self.peek() {
            Some(Token { tok: Tok::Open, .. }) => Value::Vector(self.vector(&name)?),
            // `NAME =` at the end of a line (or of the file) is the empty value, as in
            // OpenNebula (its EQUAL_EMPTY token).
            None => Value::Single(Scalar {
                text: String::new(),
                pos: eq,
            }),
            Some(t) if t.pos.line > eq.line => Value::Single(Scalar {
                text: String::new(),
                pos: eq,
            }),
            Some(_) => Value::Single(self.single(&name)?),
        };
        Ok(Attribute {
            name,
            pos: t.pos,
            value,
        })
    }

    /// A top-level single value, which must end its line unless another `NAME =`
    /// follows (OpenNebula allows several attributes on one line).
    fn single(&mut self, name: &str) -> Result<Scalar, TemplateError> {
        let Some(t) = self.next() else {
            return Err(TemplateError::syntax(
                self.end_pos(),
                Some(name),
                "no value",
            ));
        };
        let text = match &t.tok {
            Tok::Word(w) | Tok::Quoted(w) => w.clone(),
            _ => {
                return Err(Self::unexpected(
                    &t,
                    Some(name),
                    "a value, `[` or a new line",
                ))
            }
        };
        if let Some(n) = self.peek() {
            let next_is_attribute = matches!(n.tok, Tok::Word(_))
                && matches!(self.peek2(), Some(Token { tok: Tok::Eq, .. }));
            if n.pos.line == t.end_line && !next_is_attribute {
                return Err(match &n.tok {
                    Tok::Bad(m) => TemplateError::syntax(n.pos, Some(name), m.clone()),
                    other => TemplateError::syntax(
                        n.pos,
                        Some(name),
                        format!(
                            "unexpected {} after the value: {QUOTE_HINT}",
                            describe(other)
                        ),
                    ),
                });
            }
        }
        Ok(Scalar { text, pos: t.pos })
    }

    /// `[ K = V, ... ]`, the `[` not yet consumed.
    fn vector(&mut self, name: &str) -> Result<Vec<Member>, TemplateError> {
        let open = self.next().map(|t| t.pos).unwrap_or_default();
        let mut members: Vec<Member> = Vec::new();
        loop {
            let Some(t) = self.next() else {
                return Err(TemplateError::syntax(
                    open,
                    Some(name),
                    "this `[` is never closed with `]`",
                ));
            };
            match &t.tok {
                Tok::Close => return Ok(members),
                Tok::Word(_) => {}
                _ => return Err(Self::unexpected(&t, Some(name), "a member name or `]`")),
            }
            let member = Self::name(&t, Some(name), "member name")?;
            let ctx = format!("{name}/{member}");
            self.expect_eq(&ctx)?;
            let value = match self.next() {
                Some(Token {
                    tok: Tok::Word(w) | Tok::Quoted(w),
                    pos,
                    ..
                }) => Scalar { text: w, pos },
                Some(Token {
                    tok: Tok::Open,
                    pos,
                    ..
                }) => {
                    return Err(TemplateError::syntax(
                        pos,
                        Some(&ctx),
                        "vectors cannot be nested",
                    ))
                }
                Some(v) => return Err(Self::unexpected(&v, Some(&ctx), "a value")),
                None => {
                    return Err(TemplateError::syntax(
                        self.end_pos(),
                        Some(&ctx),
                        "expected a value, found the end of the file",
                    ))
                }
            };
            members.push(Member {
                name: member,
                pos: t.pos,
                value,
            });
            match self.peek().map(|t| &t.tok) {
                Some(Tok::Comma) => {
                    self.next();
                }
                Some(Tok::Close) | None => {}
                Some(_) => {
                    let n = self.next().unwrap_or(t);
                    let mut e = Self::unexpected(&n, Some(&ctx), "`,` or `]` after the value");
                    if let TemplateError::Syntax { message, .. } = &mut e {
                        if matches!(n.tok, Tok::Word(_) | Tok::Quoted(_)) {
                            message.push_str(&format!(
                                " (separate members with commas; {QUOTE_HINT})"
                            ));
                        }
                    }
                    return Err(e);
                }
            }
        }
    }
}
