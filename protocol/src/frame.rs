//! Newline-delimited frames with a hard size cap.
//!
//! A frame is one line of UTF-8 JSON without the trailing `\n` (a `\r` before it is dropped).
//! A line longer than [`MAX_FRAME`] is consumed and discarded and reported as
//! [`FrameError::TooLarge`]; the reader stays usable, so one bad frame never ends a session.
//! Payloads bigger than a frame travel in chunks (see [`crate::fs::MAX_CHUNK`]).

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The largest frame either end accepts, in bytes (8 MiB).
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The line exceeded the cap; it was skipped.
    #[error("frame of {len} bytes or more exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// The line is not UTF-8; it was skipped.
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    /// Reading the underlying stream failed; the stream is unusable.
    #[error("reading frames: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// Whether the reader can go on after this error.
    pub fn is_recoverable(&self) -> bool {
        !matches!(self, FrameError::Io(_))
    }
}

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
    pub async fn next_frame(&mut self) -> Result<Option<String>, FrameError> {
        self.buf.clear();
        let mut too_large = false;
        let mut seen = 0usize;
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                if seen == 0 {
                    return Ok(None);
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
        String::from_utf8(std::mem::take(&mut self.buf))
            .map(Some)
            .map_err(|_| FrameError::NotUtf8)
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

    #[test]
    fn encode_caps_size() {
        assert_eq!(encode("{}").unwrap(), b"{}\n");
        let big = "x".repeat(MAX_FRAME + 1);
        assert!(encode(&big).is_err());
    }
}
