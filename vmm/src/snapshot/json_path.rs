//! Which field of a JSON text a byte offset falls in, so that a decode error can name the
//! field (`vcpus[1].regs.rip`) and not only a column.
//!
//! serde_json reports an error at the position where it noticed it: inside or just after
//! the bad value (invalid type or value, unknown field), or just after the object that
//! lacks a field (missing field). Walking the text up to that position and keeping the
//! stack of open objects (with their current key) and arrays (with their current index)
//! gives the path of the value being decoded.

enum Frame {
    Object {
        key: Option<String>,
        expect_key: bool,
    },
    Array {
        index: usize,
    },
}

/// The path of the value at `offset` in `json`, `.` for the top level.
pub fn field_at(json: &[u8], offset: usize) -> String {
    let mut stack: Vec<Frame> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut is_key = false;
    let mut text: Vec<u8> = Vec::new();

    for &b in &json[..offset.min(json.len())] {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if is_key {
                    if let Some(Frame::Object { key, .. }) = stack.last_mut() {
                        *key = Some(String::from_utf8_lossy(&text).into_owned());
                    }
                }
                continue;
            }
            if is_key {
                text.push(b);
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                is_key = matches!(
                    stack.last(),
                    Some(Frame::Object {
                        expect_key: true,
                        ..
                    })
                );
                text.clear();
            }
            b'{' => stack.push(Frame::Object {
                key: None,
                expect_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = false;
                }
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            _ => {}
        }
    }

    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Object { key: None, .. } => break,
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    if path.is_empty() {
        path.push('.');
    }
    path
}

/// The byte offset of serde_json's error position (1-based line, byte column) in `json`.
pub fn error_offset(json: &[u8], err: &serde_json::Error) -> usize {
    let line_start = if err.line() <= 1 {
        0
    } else {
        json.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(err.line() - 2)
            .map_or(json.len(), |(i, _)| i + 1)
    };
    (line_start + err.column()).min(json.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(json: &str, marker: &str) -> String {
        field_at(json.as_bytes(), json.find(marker).unwrap() + marker.len())
    }

    #[test]
    fn names_nested_fields_and_indices() {
        let j = r#"{"a":1,"vcpus":[{"regs":{"rip":"x"}},{"regs":{"rip":"BAD"}}]}"#;
        assert_eq!(at(j, r#""BAD""#), "vcpus[1].regs.rip");
        assert_eq!(at(j, r#""a":1"#), "a");
        assert_eq!(field_at(j.as_bytes(), 0), ".");
    }

    #[test]
    fn after_a_closed_object_names_that_object() {
        // serde_json reports "missing field" just after the object's closing brace.
        let j = r#"{"dev":{"q":{"size":1}},"z":0}"#;
        assert_eq!(at(j, r#"{"size":1}"#), "dev.q");
    }

    #[test]
    fn quotes_and_brackets_inside_strings_are_text() {
        let j = r#"{"k\"{[":"v,]}","n":[1,2,{"m":3}]}"#;
        assert_eq!(at(j, r#"{"m":3"#), "n[2].m");
        assert_eq!(at(j, r#""v,]}""#), r#"k\"{["#);
    }

    #[test]
    fn error_offset_counts_lines() {
        let j = b"{\n  \"a\": \"x\"\n}";
        let err = serde_json::from_slice::<std::collections::HashMap<String, u32>>(j).unwrap_err();
        assert_eq!(field_at(j, error_offset(j, &err)), "a");
    }
}
