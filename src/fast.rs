//! The hash map of the hot paths: foldhash with a random seed per process
//! (much faster than SipHash on short ids; the seed keeps colliding keys
//! from being worked out in advance).

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
