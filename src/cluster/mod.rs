//! Several nodes on one registry: which node this server is (`node_id.rs`), and its membership
//! — its heartbeat and, when it wins it, the leader lease under which the loops that must run
//! once run (`membership.rs`).

mod membership;
mod node_id;

pub use membership::{Membership, BEAT, LEADER_TTL, SILENT_AFTER};
pub use node_id::{check_node_id, resolve_node_id, NODE_ID_FILE};
