//! An incremental decoder of the AWS event-stream binary framing
//! (`application/vnd.amazon.eventstream`), which AWS Bedrock streams its responses in.
//!
//! Takes body bytes split anywhere and gives whole [`Message`]s as they complete. A message is a
//! 12-byte prelude (total length, headers length, both big-endian u32, then the CRC32 of those 8
//! bytes), the headers, the payload, and the CRC32 of everything before it. A header is a name
//! (u8 length, bytes), a type byte and a value whose size the type fixes (or a u16 length gives,
//! for byte arrays and strings). Both checksums are verified, and the prelude's before its
//! lengths are trusted, so garbage is refused at its first 12 bytes rather than buffered.

use super::TranslateError;

/// AWS bounds a message's payload at 16 MiB and its headers at 128 KiB.
const MAX_MESSAGE: usize = (16 << 20) + (128 << 10) + MIN_MESSAGE;

/// The prelude and the message checksum: a message with no headers and no payload.
const MIN_MESSAGE: usize = 16;
const PRELUDE: usize = 12;

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

/// A header's value, by its wire type (0 to 9).
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    String(String),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

impl Message {
    /// The value of string header `name` (`:event-type`, `:message-type`, ...).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| match v {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
    }
}

/// Decodes messages from body bytes as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of messages not yet whole.
    pending: Vec<u8>,
}

fn invalid(what: impl std::fmt::Display) -> TranslateError {
    TranslateError::Upstream(format!("an event-stream message is invalid: {what}"))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Decoder {
    /// The messages `chunk` completes. An error (a bad checksum or length, a malformed header)
    /// means the stream cannot be read further.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Message>, TranslateError> {
        self.pending.extend_from_slice(chunk);
        let mut messages = Vec::new();
        let mut start = 0;
        while let Some(len) = self.next_len(start)? {
            if self.pending.len() - start < len {
                break;
            }
            messages.push(decode(&self.pending[start..start + len])?);
            start += len;
        }
        self.pending.drain(..start);
        Ok(messages)
    }

    /// The total length of the message at `start`, once its prelude is there and checks out.
    fn next_len(&self, start: usize) -> Result<Option<usize>, TranslateError> {
        let Some(prelude) = self.pending.get(start..start + PRELUDE) else { return Ok(None) };
        let crc = crc32fast::hash(&prelude[..8]);
        if crc != be_u32(&prelude[8..]) {
            return Err(invalid("the prelude checksum does not match"));
        }
        let total = be_u32(prelude) as usize;
        let headers = be_u32(&prelude[4..]) as usize;
        if !(MIN_MESSAGE..=MAX_MESSAGE).contains(&total) {
            return Err(invalid(format!(
                "its length {total} is outside {MIN_MESSAGE}..={MAX_MESSAGE} bytes"
            )));
        }
        if headers > total - MIN_MESSAGE {
            return Err(invalid(format!(
                "its headers ({headers} bytes) do not fit in it ({total} bytes)"
            )));
        }
        Ok(Some(total))
    }
}

/// One whole message, its prelude already checked.
fn decode(message: &[u8]) -> Result<Message, TranslateError> {
    let (body, crc) = message.split_at(message.len() - 4);
    if crc32fast::hash(body) != be_u32(crc) {
        return Err(invalid("the message checksum does not match"));
    }
    let headers_len = be_u32(&body[4..]) as usize;
    let (headers, payload) = body[PRELUDE..].split_at(headers_len);
    Ok(Message { headers: decode_headers(headers)?, payload: payload.to_vec() })
}

fn decode_headers(mut b: &[u8]) -> Result<Vec<(String, HeaderValue)>, TranslateError> {
    let mut headers = Vec::new();
    while let Some((&name_len, rest)) = b.split_first() {
        let (name, rest) = take(rest, usize::from(name_len))?;
        let name =
            String::from_utf8(name.to_vec()).map_err(|_| invalid("a header name is not UTF-8"))?;
        let (&kind, rest) = rest.split_first().ok_or_else(|| invalid("a header has no type"))?;
        let (value, rest) = header_value(kind, rest)?;
        headers.push((name, value));
        b = rest;
    }
    Ok(headers)
}

fn take(b: &[u8], n: usize) -> Result<(&[u8], &[u8]), TranslateError> {
    if b.len() < n {
        return Err(invalid("a header runs past the headers' end"));
    }
    Ok(b.split_at(n))
}

fn fixed<const N: usize>(b: &[u8]) -> Result<([u8; N], &[u8]), TranslateError> {
    let (value, rest) = take(b, N)?;
    let mut out = [0; N];
    out.copy_from_slice(value);
    Ok((out, rest))
}

fn header_value(kind: u8, b: &[u8]) -> Result<(HeaderValue, &[u8]), TranslateError> {
    Ok(match kind {
        0 => (HeaderValue::Bool(true), b),
        1 => (HeaderValue::Bool(false), b),
        2 => {
            let ([v], rest) = fixed::<1>(b)?;
            (HeaderValue::Byte(v as i8), rest)
        }
        3 => {
            let (v, rest) = fixed(b)?;
            (HeaderValue::Short(i16::from_be_bytes(v)), rest)
        }
        4 => {
            let (v, rest) = fixed(b)?;
            (HeaderValue::Int(i32::from_be_bytes(v)), rest)
        }
        5 => {
            let (v, rest) = fixed(b)?;
            (HeaderValue::Long(i64::from_be_bytes(v)), rest)
        }
        6 | 7 => {
            let (len, rest) = fixed(b)?;
            let (v, rest) = take(rest, usize::from(u16::from_be_bytes(len)))?;
            let value = if kind == 6 {
                HeaderValue::Bytes(v.to_vec())
            } else {
                let s = String::from_utf8(v.to_vec())
                    .map_err(|_| invalid("a string header is not UTF-8"))?;
                HeaderValue::String(s)
            };
            (value, rest)
        }
        8 => {
            let (v, rest) = fixed(b)?;
            (HeaderValue::Timestamp(i64::from_be_bytes(v)), rest)
        }
        9 => {
            let (v, rest) = fixed(b)?;
            (HeaderValue::Uuid(v), rest)
        }
        other => return Err(invalid(format!("header type {other} is not one of 0..=9"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message as AWS frames it, written here independently of the decoder.
    fn frame(headers: &[u8], payload: &[u8]) -> Vec<u8> {
        let total = (16 + headers.len() + payload.len()) as u32;
        let mut out = total.to_be_bytes().to_vec();
        out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
        out
    }

    fn string_header(name: &str, value: &str) -> Vec<u8> {
        let mut out = vec![name.len() as u8];
        out.extend_from_slice(name.as_bytes());
        out.push(7);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
        out
    }

    #[test]
    fn the_empty_message_matches_the_published_bytes() {
        // The smallest message: 16 bytes, no headers, no payload; its checksums as zlib's CRC32
        // computes them (and AWS's event-stream test vectors list).
        let bytes = [0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff];
        assert_eq!(frame(&[], &[]), bytes);
        let got = Decoder::default().feed(&bytes).expect("valid");
        assert_eq!(got, [Message { headers: Vec::new(), payload: Vec::new() }]);
    }

    #[test]
    fn every_header_type_decodes_at_every_split() {
        let mut headers = string_header(":event-type", "contentBlockDelta");
        for (kind, value) in [
            (0u8, &[][..]),
            (1, &[]),
            (2, &[0xff]),
            (3, &[0x01, 0x02]),
            (4, &[0, 0, 1, 0]),
            (5, &[0, 0, 0, 0, 0, 0, 0, 7]),
            (6, &[0, 2, 0xde, 0xad]),
            (8, &[0, 0, 1, 0x8b, 0xcf, 0xe5, 0x68, 0]),
            (9, &[7; 16]),
        ] {
            headers.extend_from_slice(&[1, b'a' + kind, kind]);
            headers.extend_from_slice(value);
        }
        let payload = r#"{"delta":{"text":"日本"}}"#.as_bytes();
        let mut input = frame(&headers, payload);
        input.extend(frame(&string_header(":message-type", "event"), b""));
        let whole = Decoder::default().feed(&input).expect("valid");
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].header(":event-type"), Some("contentBlockDelta"));
        assert_eq!(whole[0].payload, payload);
        let values: Vec<&HeaderValue> = whole[0].headers.iter().skip(1).map(|(_, v)| v).collect();
        assert_eq!(
            values,
            [
                &HeaderValue::Bool(true),
                &HeaderValue::Bool(false),
                &HeaderValue::Byte(-1),
                &HeaderValue::Short(0x0102),
                &HeaderValue::Int(256),
                &HeaderValue::Long(7),
                &HeaderValue::Bytes(vec![0xde, 0xad]),
                &HeaderValue::Timestamp(1_700_000_000_000),
                &HeaderValue::Uuid([7; 16]),
            ]
        );
        assert_eq!(whole[0].header(":a"), None, "not a string header");
        assert_eq!(whole[1].header(":message-type"), Some("event"));
        for split in 0..=input.len() {
            let mut d = Decoder::default();
            let mut got = d.feed(&input[..split]).expect("first piece");
            got.extend(d.feed(&input[split..]).expect("second piece"));
            assert_eq!(got, whole, "split at {split}");
        }
        let mut d = Decoder::default();
        let got: Vec<Message> =
            input.iter().flat_map(|b| d.feed(std::slice::from_ref(b)).expect("byte")).collect();
        assert_eq!(got, whole, "byte by byte");
    }

    #[test]
    fn corruption_is_refused_and_a_prefix_waits() {
        let good =
            frame(&string_header(":event-type", "messageStop"), br#"{"stopReason":"end_turn"}"#);
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            assert!(Decoder::default().feed(&bad).is_err(), "a flipped bit at {at} went unseen");
        }
        let mut d = Decoder::default();
        assert_eq!(d.feed(&good[..good.len() - 1]).expect("a prefix is fine"), []);
        assert_eq!(d.feed(&good[good.len() - 1..]).expect("the rest").len(), 1);

        // Lengths are only trusted once the prelude checksum vouches for them, and then bounded.
        let mut huge = ((MAX_MESSAGE + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 4]);
        huge.extend_from_slice(&crc32fast::hash(&huge).to_be_bytes());
        let err = Decoder::default().feed(&huge).expect_err("too long");
        assert!(err.to_string().contains("outside"), "{err}");
        let mut short = 8u32.to_be_bytes().to_vec();
        short.extend_from_slice(&[0; 4]);
        short.extend_from_slice(&crc32fast::hash(&short).to_be_bytes());
        assert!(Decoder::default().feed(&short).is_err());
        let mut overlong = 16u32.to_be_bytes().to_vec();
        overlong.extend_from_slice(&1u32.to_be_bytes());
        overlong.extend_from_slice(&crc32fast::hash(&overlong).to_be_bytes());
        assert!(Decoder::default().feed(&overlong).is_err(), "headers longer than the message");

        // Headers that run past their end, of an unknown type, or not UTF-8.
        for headers in [&[5, b'a'][..], &[1, b'a', 10], &[1, b'a', 7, 0, 5, b'x'], &[1, 0xff, 0]] {
            let err = Decoder::default().feed(&frame(headers, b"")).expect_err("bad header");
            assert!(matches!(err, TranslateError::Upstream(_)), "{err:?}");
        }
    }
}
