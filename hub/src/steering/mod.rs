//! Latency-based steering: which spoke each client network is sent to.
//! The model is pure (no I/O, a clock it is given); the DNS server and the
//! sample sources are built around it.

pub mod model;
