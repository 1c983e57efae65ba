//! The parser: syntax accepted, and every syntax error with its line, column and
//! attribute.

use crate::template::ast::{Pos, Template, Value};
use crate::template::{parse, TemplateError};

fn ok(text: &str) -> Template {
    parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// (name, value) of every single attribute, in order.
fn singles(t: &Template) -> Vec<(String, String)> {
    t.attributes
        .iter()
        .filter_map(|a| match &a.value {
            Value::Single(s) => Some((a.name.clone(), s.text.clone())),
            Value::Vector(_) => None,
        })
        .collect()
}

/// (name, value) of the members of the `n`th attribute.
fn members(t: &Template, n: usize) -> Vec<(String, String)> {
    t.attributes[n]
        .members()
        .expect("a vector")
        .iter()
        .map(|m| (m.name.clone(), m.value.text.clone()))
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The syntax error for `text`: (line, column, attribute, message).
fn err(text: &str) -> (usize, usize, Option<String>, String) {
    match parse(text) {
        Err(TemplateError::Syntax {
            pos,
            attribute,
            message,
        }) => (pos.line, pos.column, attribute, message),
        other => panic!("{text:?}: expected a syntax error, got {other:?}"),
    }
}

#[test]
fn single_attributes_quoted_and_bare() {
    let t = ok("NAME = \"web 1\"\nMEMORY = 512\nKERNEL=/boot/vmlinuz-6.1.0+x\n");
    assert_eq!(
        singles(&t),
        pairs(&[
            ("NAME", "web 1"),
            ("MEMORY", "512"),
            ("KERNEL", "/boot/vmlinuz-6.1.0+x")
        ])
    );
    assert_eq!(t.attributes[1].pos, Pos { line: 2, column: 1 });
    let Value::Single(s) = &t.attributes[0].value else {
        panic!()
    };
    assert_eq!(s.pos, Pos { line: 1, column: 8 });
}

#[test]
fn escapes_only_the_quote() {
    let t = ok(r#"A = "say \"hi\""
B = "C:\dir\n \\ end"
C = "a\"""#);
    assert_eq!(
        singles(&t),
        pairs(&[("A", "say \"hi\""), ("B", r"C:\dir\n \\ end"), ("C", "a\"")])
    );
}

#[test]
fn quoted_values_span_lines_and_keep_line_numbers() {
    let t = ok("SCRIPT = \"line one\nline two\"\nNEXT = 1\n");
    assert_eq!(
        singles(&t),
        pairs(&[("SCRIPT", "line one\nline two"), ("NEXT", "1")])
    );
    assert_eq!(t.attributes[1].pos.line, 3);
}

#[test]
fn comments_anywhere_outside_quotes() {
    let t = ok("# header\n  # indented\nA = 1 # trailing\nV = [ # after [\n  X = \"#kept\", # between\n  Y = 2 # before ]\n] # after ]\n#last");
    assert_eq!(singles(&t), pairs(&[("A", "1")]));
    assert_eq!(members(&t, 1), pairs(&[("X", "#kept"), ("Y", "2")]));
    assert_eq!(t.attributes.len(), 2);
    assert!(ok("# only a comment").attributes.is_empty());
    assert!(ok("").attributes.is_empty());
    assert!(ok(" \n\t\r\n").attributes.is_empty());
}

#[test]
fn multi_line_vectors_trailing_commas_and_empty_vectors() {
    let t = ok("DISK = [\n  SOURCE = \"/a b.img\",\n  CACHE = none ,\n  \n]\nE = [ ]\nF=[X=1,]");
    assert_eq!(
        members(&t, 0),
        pairs(&[("SOURCE", "/a b.img"), ("CACHE", "none")])
    );
    assert_eq!(t.attributes[0].members().unwrap()[1].pos.line, 3);
    assert!(members(&t, 1).is_empty());
    assert_eq!(members(&t, 2), pairs(&[("X", "1")]));
}

#[test]
fn repeated_vectors_are_kept_in_order() {
    let t = ok("DISK = [ SOURCE = a ]\nNIC = [ BRIDGE = br0 ]\nDISK = [ SOURCE = b ]\n");
    let disks: Vec<_> = t.all("DISK").collect();
    assert_eq!(disks.len(), 2);
    assert_eq!(members(&t, 2), pairs(&[("SOURCE", "b")]));
    assert_eq!(disks[1].pos.line, 3);
}

#[test]
fn names_are_case_insensitive_values_are_not() {
    let t = ok("memory = 1\nDisk = [ source = \"A.img\", Cache = None ]");
    assert_eq!(singles(&t), pairs(&[("MEMORY", "1")]));
    assert_eq!(
        members(&t, 1),
        pairs(&[("SOURCE", "A.img"), ("CACHE", "None")])
    );
    assert_eq!(t.all("DISK").count(), 1);
}

#[test]
fn empty_values() {
    let t = ok("A =\nB = \"\"\nC = 1\nD =");
    assert_eq!(
        singles(&t),
        pairs(&[("A", ""), ("B", ""), ("C", "1"), ("D", "")])
    );
}

#[test]
fn several_attributes_on_one_line_crlf_and_bracket_on_next_line() {
    let t = ok("A = 1 B = \"2\"\r\nC = 3\r\nV =\n[ X = 1 ]\r\n");
    assert_eq!(singles(&t), pairs(&[("A", "1"), ("B", "2"), ("C", "3")]));
    assert_eq!(members(&t, 3), pairs(&[("X", "1")]));
    assert_eq!(t.attributes[2].pos.line, 2);
}

#[test]
fn errors_outside_attributes() {
    let (l, c, a, m) = err("= 1");
    assert_eq!((l, c, a), (1, 1, None));
    assert!(m.contains("expected attribute name, found `=`"), "{m}");

    let (l, c, a, m) = err("A = 1\n\"B\" = 2");
    assert_eq!((l, c, a), (2, 1, None));
    assert!(m.contains("found a quoted string"), "{m}");

    let (l, c, a, m) = err("\n  my-key = 1");
    assert_eq!((l, c, a), (2, 3, None));
    assert!(m.contains("`my-key` is not a valid attribute name"), "{m}");

    let (l, c, _, m) = err("A = 1\n]");
    assert_eq!((l, c), (2, 1));
    assert!(m.contains("found `]`"), "{m}");
}

#[test]
fn errors_in_single_attributes_name_them() {
    let (l, c, a, m) = err("NAME 1");
    assert_eq!((l, c, a.as_deref()), (1, 6, Some("NAME")));
    assert!(m.contains("expected `=` after the name, found `1`"), "{m}");

    let (l, c, a, m) = err("\nname");
    assert_eq!((l, a.as_deref()), (2, Some("NAME")));
    assert!(c > 1);
    assert!(m.contains("found the end of the file"), "{m}");

    let (l, c, a, m) = err("MEMORY = 1\nNAME = web server");
    assert_eq!((l, c, a.as_deref()), (2, 12, Some("NAME")));
    assert!(m.contains("unexpected `server` after the value"), "{m}");
    assert!(m.contains("quote values"), "{m}");

    let (l, c, a, m) = err("KERNEL_CMD = console=ttyS0");
    assert_eq!((l, c, a.as_deref()), (1, 21, Some("KERNEL_CMD")));
    assert!(m.contains("unexpected `=`"), "{m}");

    let (l, c, a, m) = err("A = ,");
    assert_eq!((l, c, a.as_deref()), (1, 5, Some("A")));
    assert!(
        m.contains("expected a value, `[` or a new line, found `,`"),
        "{m}"
    );

    let (l, c, a, m) = err("A = ]");
    assert_eq!((l, c, a.as_deref()), (1, 5, Some("A")));
    assert!(m.contains("found `]`"), "{m}");
}

#[test]
fn unterminated_strings_point_at_the_opening_quote() {
    let (l, c, a, m) = err("A = 1\nB = \"abc\nmore\n");
    assert_eq!((l, c, a.as_deref()), (2, 5, Some("B")));
    assert!(m.contains("never closed"), "{m}");

    let (l, c, a, m) = err("V = [ X = 1,\n  Y = \"open ]");
    assert_eq!((l, c, a.as_deref()), (2, 7, Some("V/Y")));
    assert!(m.contains("line 2, column 7 is never closed"), "{m}");

    // After a complete value on the same line: still reported, for that attribute.
    let (l, _, a, m) = err("A = 1 \"x");
    assert_eq!((l, a.as_deref()), (1, Some("A")));
    assert!(m.contains("never closed"), "{m}");
}

#[test]
fn errors_in_vectors_name_the_member() {
    let (l, c, a, m) = err("DISK = [\n  SOURCE = \"a\"\n  CACHE = none ]");
    assert_eq!((l, c, a.as_deref()), (3, 3, Some("DISK/SOURCE")));
    assert!(
        m.contains("expected `,` or `]` after the value, found `CACHE`"),
        "{m}"
    );
    assert!(m.contains("separate members with commas"), "{m}");

    let (l, c, a, m) = err("DISK = [ SOURCE \"a\" ]");
    assert_eq!((l, c, a.as_deref()), (1, 17, Some("DISK/SOURCE")));
    assert!(m.contains("expected `=` after the name"), "{m}");

    let (l, c, a, m) = err("DISK = [ SOURCE = ]");
    assert_eq!((l, c, a.as_deref()), (1, 19, Some("DISK/SOURCE")));
    assert!(m.contains("expected a value, found `]`"), "{m}");

    let (_, _, a, m) = err("DISK = [ SOURCE = ");
    assert_eq!(a.as_deref(), Some("DISK/SOURCE"));
    assert!(m.contains("found the end of the file"), "{m}");

    let (l, c, a, m) = err("DISK = [ X = [ Y = 1 ] ]");
    assert_eq!((l, c, a.as_deref()), (1, 14, Some("DISK/X")));
    assert!(m.contains("cannot be nested"), "{m}");

    let (l, c, a, m) = err("DISK = [ , ]");
    assert_eq!((l, c, a.as_deref()), (1, 10, Some("DISK")));
    assert!(
        m.contains("expected a member name or `]`, found `,`"),
        "{m}"
    );

    let (_, c, a, _) = err("DISK = [ X = 1,, ]");
    assert_eq!((c, a.as_deref()), (16, Some("DISK")));

    let (l, c, a, m) = err("DISK = [ bad-name = 1 ]");
    assert_eq!((l, c, a.as_deref()), (1, 10, Some("DISK")));
    assert!(m.contains("`bad-name` is not a valid member name"), "{m}");

    let (l, c, a, m) = err("DISK = [ \"X\" = 1 ]");
    assert_eq!((l, c, a.as_deref()), (1, 10, Some("DISK")));
    assert!(m.contains("found a quoted string"), "{m}");
}

#[test]
fn unclosed_vector_points_at_its_bracket() {
    let (l, c, a, m) = err("A = 1\nDISK = [\n  SOURCE = a,\n  CACHE = none\n");
    assert_eq!((l, c, a.as_deref()), (2, 8, Some("DISK")));
    assert!(m.contains("never closed"), "{m}");
}

#[test]
fn display_gives_line_column_and_attribute() {
    let e = parse("A = 1\nDISK = [ SOURCE = ]").unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 2, column 19: in DISK/SOURCE: expected a value, found `]`"
    );
    assert_eq!(e.line(), Some(2));
    let e = parse("= 1").unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 1, column 1: expected attribute name, found `=`"
    );
}
