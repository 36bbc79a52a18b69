//! Newline-delimited frames with a hard size cap.
//!
//! A frame is one line of UTF-8 JSON without the trailing `\n` (a `\r` before it is dropped).
//! A line longer than [`MAX_FRAME`] is consumed and discarded and reported as
//! [`FrameError::TooLarge`]; the reader stays usable, so one bad frame never ends a session.
//! Payloads bigger than a frame travel in chunks (see [`crate::fs::MAX_CHUNK`]).
//!
//! ## Binary frames (bulk data, agent → pii → client only)
//!
//! A request may opt in to a raw answer (today only `fs.read` with `raw: true`). Its response
//! then travels as a binary frame: a header line that no JSON frame can start with, then exactly
//! `len` raw bytes (no newline after them):
//!
//! ```text
//! \x1e<len> <JSON-RPC response without the bulk field>\n<len raw bytes>
//! ```
//!
//! `\x1e` is [`BINARY_MARK`] (ASCII record separator: JSON text never starts with a control
//! character), `<len>` is decimal ASCII, at most [`MAX_PAYLOAD`] (= [`crate::fs::MAX_CHUNK`], so
//! the 8 MiB frame cap keeps its meaning). Only [`FrameReader::next_item`] understands binary
//! frames; [`FrameReader::next_frame`] (used where none may arrive: the agent's input, the
//! endpoint's requests) sees the header as one more line that is not JSON.
//!
//! A header whose length is missing, not a number or over [`MAX_PAYLOAD`] is
//! [`FrameError::BadBinary`], which is NOT recoverable: the length cannot be trusted, so where
//! the payload ends (and the next frame starts) is unknown, and guessing could turn file bytes
//! into frames. The link is failed loudly instead (pii reconnects and re-sends idempotent calls).
//! A payload cut short by the end of the stream is [`FrameError::Io`] (`UnexpectedEof`): a
//! partial binary frame is never delivered.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// The largest frame either end accepts, in bytes (8 MiB).
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// The first byte of a binary frame's header line (ASCII RS; see the module doc).
pub const BINARY_MARK: u8 = 0x1e;

/// The most raw bytes a binary frame carries.
pub const MAX_PAYLOAD: usize = crate::fs::MAX_CHUNK;

/// What [`FrameReader::next_item`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A JSON line (or a blank heartbeat).
    Text(String),
    /// A binary frame: its JSON header and its raw bytes.
    Binary { header: String, payload: Vec<u8> },
}

/// A binary frame on the wire: header line + payload. Refuses a payload over [`MAX_PAYLOAD`] or a
/// header over [`MAX_FRAME`].
pub fn encode_binary(header: &str, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::BadBinary(format!(
            "payload of {} bytes exceeds the {MAX_PAYLOAD}-byte limit",
            payload.len()
        )));
    }
    if header.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: header.len(),
            max: MAX_FRAME,
        });
    }
    debug_assert!(
        !header.contains('\n'),
        "serde_json never emits raw newlines"
    );
    let len = payload.len().to_string();
    let mut v = Vec::with_capacity(1 + len.len() + 1 + header.len() + 1 + payload.len());
    v.push(BINARY_MARK);
    v.extend_from_slice(len.as_bytes());
    v.push(b' ');
    v.extend_from_slice(header.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(payload);
    Ok(v)
}

/// Split a binary header line (without its `\n`) into the payload length and the JSON header.
pub fn parse_binary_header(line: &[u8]) -> Result<(usize, &str), FrameError> {
    let bad = |why: &str| FrameError::BadBinary(why.to_string());
    let rest = line
        .strip_prefix(&[BINARY_MARK])
        .ok_or_else(|| bad("not a binary header"))?;
    let sp = rest
        .iter()
        .position(|&c| c == b' ')
        .ok_or_else(|| bad("binary header without a length"))?;
    let digits = &rest[..sp];
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad("binary header length is not a decimal number"));
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| bad("binary header length is not a decimal number"))?;
    if len > MAX_PAYLOAD {
        return Err(FrameError::BadBinary(format!(
            "binary payload of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit"
        )));
    }
    // Not `NotUtf8` (recoverable): the payload is still unread, so this is as fatal as a bad length.
    let json = std::str::from_utf8(&rest[sp + 1..])
        .map_err(|_| bad("binary header is not valid UTF-8"))?;
    Ok((len, json))
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The line exceeded the cap; it was skipped.
    #[error("frame of {len} bytes or more exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// The line is not UTF-8; it was skipped.
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    /// A binary frame's header is malformed or announces too much: where its payload ends is
    /// unknown, so the stream is unusable.
    #[error("bad binary frame: {0}")]
    BadBinary(String),
    /// Reading the underlying stream failed; the stream is unusable.
    #[error("reading frames: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// Whether the reader can go on after this error.
    pub fn is_recoverable(&self) -> bool {
        !matches!(self, FrameError::Io(_) | FrameError::BadBinary(_))
    }
}

/// Either end's byte streams, boxed (a pipe, a socket, ssh's stdio, an in-memory duplex).
pub type BoxRead = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
/// See [`BoxRead`].
pub type BoxWrite = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// Reads frames from a buffered async stream.
pub struct FrameReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_FRAME)
    }

    pub fn with_limit(inner: R, max: usize) -> Self {
        FrameReader {
            inner,
            max,
            buf: Vec::new(),
        }
    }

    /// The next frame, `Ok(None)` at end of stream. A final line without `\n` still counts.
    /// Binary frames are not understood here (see the module doc).
    pub async fn next_frame(&mut self) -> Result<Option<String>, FrameError> {
        if !self.next_line().await? {
            return Ok(None);
        }
        String::from_utf8(std::mem::take(&mut self.buf))
            .map(Some)
            .map_err(|_| FrameError::NotUtf8)
    }

    /// The next frame, text or binary, `Ok(None)` at end of stream.
    pub async fn next_item(&mut self) -> Result<Option<Frame>, FrameError> {
        if !self.next_line().await? {
            return Ok(None);
        }
        if self.buf.first() != Some(&BINARY_MARK) {
            return String::from_utf8(std::mem::take(&mut self.buf))
                .map(|t| Some(Frame::Text(t)))
                .map_err(|_| FrameError::NotUtf8);
        }
        let (len, header) = parse_binary_header(&self.buf)?;
        let header = header.to_string();
        let mut payload = vec![0u8; len];
        self.inner.read_exact(&mut payload).await?;
        Ok(Some(Frame::Binary { header, payload }))
    }

    /// Read one line into `buf` (without `\r\n`); `false` at end of stream.
    async fn next_line(&mut self) -> Result<bool, FrameError> {
        self.buf.clear();
        let mut too_large = false;
        let mut seen = 0usize;
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                if seen == 0 {
                    return Ok(false);
                }
                break;
            }
            let (take, done) = match memchr(chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            seen += take;
            if !too_large {
                if self.buf.len() + take > self.max + 2 {
                    too_large = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(&chunk[..take]);
                }
            }
            self.inner.consume(take);
            if done {
                break;
            }
        }
        if too_large {
            return Err(FrameError::TooLarge {
                len: seen,
                max: self.max,
            });
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if self.buf.len() > self.max {
            return Err(FrameError::TooLarge {
                len: self.buf.len(),
                max: self.max,
            });
        }
        Ok(true)
    }

    /// The underlying reader (e.g. to hand it on after a handshake).
    pub fn into_inner(self) -> R {
        self.inner
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Append `\n` to a serialized frame, refusing one over the cap.
pub fn encode(json: &str) -> Result<Vec<u8>, FrameError> {
    if json.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: json.len(),
            max: MAX_FRAME,
        });
    }
    debug_assert!(!json.contains('\n'), "serde_json never emits raw newlines");
    let mut v = Vec::with_capacity(json.len() + 1);
    v.extend_from_slice(json.as_bytes());
    v.push(b'\n');
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max: usize) -> Vec<Result<String, String>> {
        let mut r = FrameReader::with_limit(tokio::io::BufReader::with_capacity(4, input), max);
        let mut out = vec![];
        loop {
            match r.next_frame().await {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => return out,
                Err(e) => out.push(Err(e.to_string())),
            }
        }
    }

    #[tokio::test]
    async fn splits_lines_across_buffer_boundaries() {
        let got = frames(b"{\"a\":1}\n\n{\"bb\":22}\r\nlast", 100).await;
        assert_eq!(
            got,
            vec![
                Ok("{\"a\":1}".into()),
                Ok("".into()),
                Ok("{\"bb\":22}".into()),
                Ok("last".into())
            ]
        );
    }

    #[tokio::test]
    async fn oversize_frame_is_skipped_and_reading_goes_on() {
        let mut input = vec![b'x'; 50];
        input.extend_from_slice(b"\nok\n");
        let got = frames(&input, 10).await;
        assert_eq!(got.len(), 2);
        assert!(got[0]
            .as_ref()
            .unwrap_err()
            .contains("exceeds the 10-byte limit"));
        assert_eq!(got[1], Ok("ok".into()));
    }

    #[tokio::test]
    async fn invalid_utf8_is_reported_not_fatal() {
        let got = frames(b"\xff\xfe\n{}\n", 100).await;
        assert_eq!(
            got,
            vec![Err("frame is not valid UTF-8".into()), Ok("{}".into())]
        );
    }

    async fn items(input: &[u8], cap: usize) -> Vec<Result<Frame, String>> {
        let mut r = FrameReader::new(tokio::io::BufReader::with_capacity(cap, input));
        let mut out = vec![];
        loop {
            match r.next_item().await {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => return out,
                Err(e) => {
                    let fatal = !e.is_recoverable();
                    out.push(Err(e.to_string()));
                    if fatal {
                        return out;
                    }
                }
            }
        }
    }

    fn all_bytes() -> Vec<u8> {
        // Every byte value, newlines and the mark included, then some.
        (0..=255u8)
            .chain([b'\n', BINARY_MARK, b'\r', 0, 0xff])
            .collect()
    }

    #[tokio::test]
    async fn binary_frames_round_trip_between_text_frames() {
        let payload = all_bytes();
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend(encode_binary(r#"{"id":1,"result":{"size":9}}"#, &payload).unwrap());
        input.extend(encode_binary(r#"{"id":2}"#, b"").unwrap());
        input.extend_from_slice(b"\n{\"b\":2}\n");
        for cap in [1, 3, 7, 64, 8192] {
            let got = items(&input, cap).await;
            assert_eq!(
                got,
                vec![
                    Ok(Frame::Text("{\"a\":1}".into())),
                    Ok(Frame::Binary {
                        header: r#"{"id":1,"result":{"size":9}}"#.into(),
                        payload: payload.clone()
                    }),
                    Ok(Frame::Binary {
                        header: r#"{"id":2}"#.into(),
                        payload: vec![]
                    }),
                    Ok(Frame::Text("".into())),
                    Ok(Frame::Text("{\"b\":2}".into())),
                ],
                "buffer capacity {cap}"
            );
        }
    }

    #[tokio::test]
    async fn truncated_payload_is_an_io_error_never_a_frame() {
        let mut input = encode_binary("{}", &all_bytes()).unwrap();
        input.truncate(input.len() - 3);
        let got = items(&input, 16).await;
        assert_eq!(got.len(), 1);
        assert!(
            got[0].as_ref().unwrap_err().contains("reading frames"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn oversize_or_malformed_length_fails_the_stream() {
        let over = format!("\x1e{} {{}}\n{{\"next\":1}}\n", MAX_PAYLOAD + 1);
        let got = items(over.as_bytes(), 64).await;
        assert_eq!(
            got.len(),
            1,
            "nothing after a bad header is delivered: {got:?}"
        );
        assert!(got[0]
            .as_ref()
            .unwrap_err()
            .contains("exceeds the 4194304-byte limit"));
        for bad in [
            "\x1e{}\n",
            "\x1e12x {}\n",
            "\x1e {}\n",
            "\x1e-1 {}\n",
            "\x1e99999999999 {}\n",
        ] {
            let got = items(bad.as_bytes(), 64).await;
            assert_eq!(got.len(), 1, "{bad:?}: {got:?}");
            assert!(
                got[0].as_ref().unwrap_err().starts_with("bad binary frame"),
                "{bad:?}: {got:?}"
            );
        }
        assert!(encode_binary("{}", &vec![0; MAX_PAYLOAD + 1]).is_err());
        assert!(encode_binary("{}", &vec![0; MAX_PAYLOAD]).is_ok());
    }

    #[tokio::test]
    async fn next_frame_does_not_interpret_binary_headers() {
        // Where no binary frame may come, a header is one more line (not JSON: the caller's
        // parse error path), and its length is not trusted.
        let got = frames(b"\x1e99999999 {}\n{}\n", 100).await;
        assert_eq!(got, vec![Ok("\x1e99999999 {}".into()), Ok("{}".into())]);
    }

    #[test]
    fn encode_caps_size() {
        assert_eq!(encode("{}").unwrap(), b"{}\n");
        let big = "x".repeat(MAX_FRAME + 1);
        assert!(encode(&big).is_err());
    }
}
