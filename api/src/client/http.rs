//! Just enough HTTP/1.1 for one request per connection: write it with a Content-Length
//! and `Connection: close`, read the status line, the headers and the body (by
//! Content-Length, chunked, or until the server closes).

use std::io::{self, BufRead, BufReader, Read, Write};

/// Largest response accepted (a VM's info with its config is a few KiB).
const MAX_RESPONSE_BYTES: u64 = 16 << 20;
const MAX_HEADER_LINE: u64 = 8 << 10;

/// A response as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    /// In order received, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A malformed response (as opposed to an I/O error).
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Bad(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

pub(crate) fn write_request(
    out: &mut impl Write,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> io::Result<()> {
    let body = body.unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str("\r\n");
    // One write for small requests: the server sees the whole request at once.
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    out.write_all(&message)?;
    out.flush()
}

pub(crate) fn read_response(input: impl Read) -> Result<RawResponse, ReadError> {
    let mut input = BufReader::new(input.take(MAX_RESPONSE_BYTES));
    let status_line = line(&mut input)?;
    let status = parse_status_line(&status_line)?;
    let mut headers = Vec::new();
    loop {
        let header = line(&mut input)?;
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| ReadError::Bad(format!("bad header line {header:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut response = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = match response.header("content-length") {
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ReadError::Bad(format!("bad Content-Length {v:?}")))?,
        ),
        None => None,
    };
    let body = if chunked {
        read_chunked(&mut input)?
    } else if let Some(n) = length {
        let mut body = Vec::new();
        input.by_ref().take(n).read_to_end(&mut body)?;
        if body.len() as u64 != n {
            return Err(ReadError::Bad(format!(
                "the body ended after {} of {n} bytes",
                body.len()
            )));
        }
        body
    } else {
        let mut body = Vec::new();
        input.read_to_end(&mut body)?;
        body
    };
    response.body = body;
    Ok(response)
}

/// One CRLF- (or LF-) terminated line, without the terminator.
fn line(input: &mut impl BufRead) -> Result<String, ReadError> {
    let mut raw = Vec::new();
    input.take(MAX_HEADER_LINE).read_until(b'\n', &mut raw)?;
    if raw.last() != Some(&b'\n') {
        return Err(ReadError::Bad(if raw.is_empty() {
            "the connection closed without an answer".to_string()
        } else {
            "a header line is cut short or too long".to_string()
        }));
    }
    let text = String::from_utf8(raw)
        .map_err(|_| ReadError::Bad("a header line is not UTF-8".to_string()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

fn parse_status_line(line: &str) -> Result<u16, ReadError> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(format!("not an HTTP/1 answer: {line:?}")));
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..=999).contains(c))
        .ok_or_else(|| ReadError::Bad(format!("bad status line {line:?}")))
}

fn read_chunked(input: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let size_line = line(input)?;
        let hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(hex, 16)
            .map_err(|_| ReadError::Bad(format!("bad chunk size {size_line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !line(input)?.is_empty() {}
            return Ok(body);
        }
        let before = body.len();
        input.by_ref().take(size).read_to_end(&mut body)?;
        if (body.len() - before) as u64 != size {
            return Err(ReadError::Bad("a chunk is cut short".to_string()));
        }
        line(input)?;
    }
}
