//! Hash maps and sets looked up on every forwarded request (the gate's
//! listeners and approvals, the connection pool, the schemes, requests in
//! flight): foldhash instead of std's SipHash, which cost about 1,600
//! instructions per request (measured under callgrind). Keys are ports,
//! counters and the identities of local listeners, none of them Kandan's
//! strings; the seed is random, so collisions cannot be prepared ahead.

pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
