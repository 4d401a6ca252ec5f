//! A broadcast task's aggregated output: every node's status and reply.

/// One node's part of a broadcast's aggregated output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReply {
    pub node: u32,
    /// The task's status on that node (0 ok; see `engine::record::status`).
    pub status: i32,
    /// Its output, or the error message when the status is not 0.
    pub output: Vec<u8>,
}

/// Encodes a broadcast's replies: `count u32`, then per node `node u32,
/// status i32, len u32, bytes` (little-endian), in node order.
pub fn encode_broadcast(replies: &[NodeReply]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(4 + replies.iter().map(|r| 12 + r.output.len()).sum::<usize>());
    out.extend_from_slice(&(replies.len() as u32).to_le_bytes());
    for r in replies {
        out.extend_from_slice(&r.node.to_le_bytes());
        out.extend_from_slice(&r.status.to_le_bytes());
        out.extend_from_slice(&(r.output.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.output);
    }
    out
}

/// Reads what [`encode_broadcast`] wrote; None if the bytes are not that.
pub fn decode_broadcast(mut b: &[u8]) -> Option<Vec<NodeReply>> {
    fn u32_at(b: &mut &[u8]) -> Option<u32> {
        let (h, t) = b.split_first_chunk::<4>()?;
        *b = t;
        Some(u32::from_le_bytes(*h))
    }
    let count = u32_at(&mut b)?;
    let mut out = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let node = u32_at(&mut b)?;
        let status = u32_at(&mut b)? as i32;
        let len = u32_at(&mut b)? as usize;
        if b.len() < len {
            return None;
        }
        let (o, t) = b.split_at(len);
        out.push(NodeReply {
            node,
            status,
            output: o.to_vec(),
        });
        b = t;
    }
    b.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::status;

    #[test]
    fn broadcast_output_round_trips_and_refuses_truncation() {
        let r = vec![
            NodeReply {
                node: 0,
                status: 0,
                output: b"pong".to_vec(),
            },
            NodeReply {
                node: 2,
                status: status::NODE_UNAVAILABLE,
                output: b"down".to_vec(),
            },
        ];
        let b = encode_broadcast(&r);
        assert_eq!(decode_broadcast(&b), Some(r));
        for cut in 0..b.len() {
            assert_eq!(decode_broadcast(&b[..cut]), None, "cut at {cut}");
        }
    }
}
