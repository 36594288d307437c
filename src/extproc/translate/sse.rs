//! An incremental server-sent-events parser.
//!
//! Takes body bytes split anywhere (inside a line, inside a UTF-8 character) and gives whole
//! events as they complete. Lines are cut at `\n` bytes, which never occur inside a multi-byte
//! UTF-8 character, so text is only decoded once a line is whole.

use super::TranslateError;

/// A line longer than this is not an SSE stream; refuse it rather than buffer without bound.
const MAX_PENDING: usize = 16 << 20;

/// One event: its `event:` name, its `data:` lines joined by `\n`, and its bytes as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub has_data: bool,
    pub raw: Vec<u8>,
    /// A blank line ended it; only the last event of a body can lack one, when the body ended
    /// inside it (a fragment, if the upstream was cut off).
    pub ended: bool,
}

#[derive(Debug, Default)]
pub(super) struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    current: SseEvent,
}

impl SseParser {
    /// Events completed by `chunk`; at the end of the stream an unterminated last event counts.
    pub(super) fn feed(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Vec<SseEvent>, TranslateError> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            let line = std::mem::take(&mut self.line);
            self.current.raw.extend_from_slice(&line);
            self.current.raw.push(b'\n');
            if let Some(event) = self.line_done(&line) {
                events.push(event);
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_PENDING {
            return Err(TranslateError::Upstream(format!(
                "an event stream line is longer than {MAX_PENDING} bytes"
            )));
        }
        if end_of_stream {
            let line = std::mem::take(&mut self.line);
            if !line.is_empty() {
                self.current.raw.extend_from_slice(&line);
                self.line_done(&line);
            }
            if !self.current.raw.is_empty() {
                events.push(std::mem::take(&mut self.current));
            }
        }
        Ok(events)
    }

    /// Applies one whole line; a blank line ends the current event.
    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.current.ended = true;
            return Some(std::mem::take(&mut self.current));
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.current.event = Some(value.to_string()),
            "data" => {
                if self.current.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.current.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let input =
            "event: a\ndata: {\"x\":\"日本\"}\n\n: comment\n\ndata: 1\r\ndata: 2\r\n\r\ndata: last";
        let whole = SseParser::default().feed(input.as_bytes(), true).unwrap_or_default();
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0].event.as_deref(), Some("a"));
        assert_eq!(whole[0].data, "{\"x\":\"日本\"}");
        assert!(!whole[1].has_data);
        assert_eq!(whole[2].data, "1\n2");
        assert_eq!(whole[3].data, "last");
        assert_eq!(whole.iter().map(|e| e.ended).collect::<Vec<_>>(), [true, true, true, false]);
        for split in 0..=input.len() {
            let mut p = SseParser::default();
            let (a, b) = input.as_bytes().split_at(split);
            let mut got = p.feed(a, false).unwrap_or_default();
            got.extend(p.feed(b, true).unwrap_or_default());
            assert_eq!(got, whole, "split at {split}");
        }
    }
}
