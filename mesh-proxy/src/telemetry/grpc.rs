//! Counting gRPC messages in a body as it streams: each message is a 5-byte prefix (a flag and
//! a big-endian length) and that many bytes, split across data frames in any way.

/// The framing state between two chunks of a gRPC body.
#[derive(Debug, Default, Clone)]
pub struct MessageCounter {
    /// Prefix bytes of the next message seen so far (up to 5).
    prefix: [u8; 5],
    prefix_len: usize,
    /// Payload bytes of the current message still to come.
    remaining: u64,
    /// Messages whose prefix was read.
    pub messages: u64,
}

impl MessageCounter {
    /// Feeds the next chunk of the body.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = (self.remaining).min(chunk.len() as u64) as usize;
                self.remaining -= skip as u64;
                chunk = &chunk[skip..];
                continue;
            }
            let take = (5 - self.prefix_len).min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&chunk[..take]);
            self.prefix_len += take;
            chunk = &chunk[take..];
            if self.prefix_len == 5 {
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                self.messages += 1;
                self.remaining = u64::from(len);
                self.prefix_len = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn counts_messages_however_the_frames_split_them() {
        let body: Vec<u8> = [message(b"hello"), message(b""), message(&[7; 300])].concat();
        for split in [1, 2, 3, 5, 7, 64, body.len()] {
            let mut c = MessageCounter::default();
            for chunk in body.chunks(split) {
                c.feed(chunk);
            }
            assert_eq!(c.messages, 3, "chunks of {split}");
        }
    }
}
