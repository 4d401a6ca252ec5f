//! What the engine needs of a network layer, defined here and implemented
//! by `crate::net`: the engine decides nothing about peers and knows no
//! socket. A worker that pops a task with a route asks [`Remote::decide`]
//! and, for a peer, hands the record over with [`Remote::post`]; a record
//! the network layer submitted (`NET_WAKER`) reports its completion the
//! same way.

use chimaera_proto::admin::ClusterStats;
use chimaera_proto::wire::Route;

/// Where a task with a route runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Here: the route names this node.
    Local,
    /// On that peer, which is up.
    Remote(u32),
    /// On every node.
    Broadcast,
    /// Nowhere: complete the task with this status and message.
    Fail(i32, String),
}

/// Work for the network layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// A local client's task to send on (the network layer now holds its
    /// runtime reference).
    Forward(u32),
    /// A task the network layer submitted (for a peer, or a broadcast's
    /// local leg) is done.
    Done(u32),
}

/// A network layer, as the engine sees it.
pub trait Remote: Send + Sync {
    /// Where a task routed `route` runs.
    fn decide(&self, route: Route) -> Decision;
    /// Hands a record to the network layer.
    fn post(&self, note: Note);
    /// This node's view of the cluster, for the admin pool's STATS.
    fn cluster_stats(&self) -> ClusterStats;
}

/// A layer the engine stops in its place: after the workers drained (it
/// answers for what they finished), before the reapers and the segments
/// (it reads records).
pub trait Attached: Send {
    fn stop(self: Box<Self>);
}
