//! Property tests: no input makes the parser or the mapping panic, errors point inside
//! the text, and written-out templates read back as written.

use std::path::Path;

use proptest::prelude::*;

use crate::template::ast::Value;
use crate::template::{convert_template, parse, TemplateError};

/// Error positions must be somewhere a user can find: within the text's lines.
fn check_position(text: &str, e: &TemplateError) {
    if let Some(line) = e.line() {
        let lines = text.split('\n').count();
        assert!(line >= 1 && line <= lines, "line {line} of {lines}: {e}");
    }
}

/// Quote a value the way a template author would.
fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\\\""))
}

/// A printable value. A value cannot end in a backslash: as in OpenNebula, `\"` is
/// always an escaped quote and there is no escape for the backslash itself.
fn value() -> impl Strategy<Value = String> {
    "[ -~\n]{0,12}".prop_filter("ends in a backslash", |v| !v.ends_with('\\'))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        if let Err(e) = parse(&text) {
            check_position(&text, &e);
        }
        let _ = convert_template(&text, Path::new("/base"));
    }

    /// Text made of the characters the grammar cares about reaches the deep paths.
    #[test]
    fn template_like_text_never_panics(
        text in r##"([A-Za-z_]{1,6}|[=\[\],"#\\ \n]|[0-9]{1,3}|\t|é){0,60}"##
    ) {
        if let Err(e) = parse(&text) {
            check_position(&text, &e);
        }
        if let Err(e) = convert_template(&text, Path::new("")) {
            check_position(&text, &e);
        }
    }

    /// Mutations of a valid template (one byte range replaced) never panic.
    #[test]
    fn mutated_templates_never_panic(
        at in 0usize..400, len in 0usize..8, insert in r##"[=\[\],"#a-z0-9 \n]{0,4}"##
    ) {
        let base = include_str!("../../../../resources/examples/opennebula-vm.tmpl");
        let at = at.min(base.len());
        let end = (at + len).min(base.len());
        if base.is_char_boundary(at) && base.is_char_boundary(end) {
            let text = format!("{}{}{}", &base[..at], insert, &base[end..]);
            if let Err(e) = convert_template(&text, Path::new("")) {
                check_position(&text, &e);
            }
        }
    }

    /// Attributes written out (quoted, vectors with trailing commas, comments) parse
    /// back to the same names and values.
    #[test]
    fn written_templates_read_back(
        attrs in prop::collection::vec(
            ("[a-zA-Z_][a-zA-Z0-9_]{0,8}",
             prop_oneof![
                 value().prop_map(|v| (false, vec![v])),
                 prop::collection::vec(value(), 0..4).prop_map(|v| (true, v)),
             ]),
            0..8,
        )
    ) {
        let mut text = String::from("# generated\n");
        for (name, (vector, values)) in &attrs {
            if *vector {
                text.push_str(&format!("{name} = [\n"));
                for (i, v) in values.iter().enumerate() {
                    text.push_str(&format!("  M{i} = {}, # c\n", quote(v)));
                }
                text.push_str("]\n");
            } else {
                text.push_str(&format!("{name} = {}\n", quote(&values[0])));
            }
        }
        let t = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(t.attributes.len(), attrs.len());
        for (a, (name, (vector, values))) in t.attributes.iter().zip(&attrs) {
            prop_assert_eq!(&a.name, &name.to_ascii_uppercase());
            match &a.value {
                Value::Single(s) => {
                    prop_assert!(!vector);
                    prop_assert_eq!(&s.text, &values[0]);
                }
                Value::Vector(m) => {
                    prop_assert!(vector);
                    let got: Vec<&str> = m.iter().map(|m| m.value.text.as_str()).collect();
                    prop_assert_eq!(got, values.iter().map(String::as_str).collect::<Vec<_>>());
                }
            }
        }
    }
}
