//! Pieces shared by ferry's daemons: configuration loading, TLS, the HTTP
//! listener, problem details, object paths, checksums and the provider
//! registry.

pub mod activation;
pub mod body;
pub mod cached_read;
pub mod cert_time;
pub mod checksum;
pub mod config;
pub mod content;
pub mod contract;
pub mod cors;
pub mod daemon;
pub mod heap;
pub mod http_metrics;
pub mod http_server;
pub mod link;
pub mod listener;
pub mod metrics_text;
pub mod operator_listener;
pub mod path;
pub mod prefix;
pub mod principal;
pub mod private_file;
pub mod probe;
pub mod problem;
pub mod proto;
pub mod provider;
pub mod request_id;
pub mod s3_door;
pub mod sockets;
pub mod source_limit;
pub mod systemd;
pub mod tasks;
pub mod tcp_rtt;
pub mod telemetry;
pub mod tls;
pub mod tunnel_io;
pub mod uploads;
