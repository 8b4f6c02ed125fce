//! Integration tests: the server runs in-process on 127.0.0.1 port 0 and is
//! talked to over real TCP. One test binary (faster to build and link) with a
//! module per concern.

mod certs;
mod common;

mod admission;
mod archive_attack;
mod archives;
mod balancers;
mod bots;
mod cli;
mod clients;
mod close_attack;
mod config;
mod conns_attack;
mod deadlines;
mod deploy;
mod docs;
mod download;
mod download_clients;
mod download_share_attack;
mod echo;
mod fairness;
mod get_archive;
mod get_archive_attack;
mod get_errors_attack;
mod get_resume_attack;
mod history;
mod history_attack;
mod hostile_server;
mod http;
mod lifecycle;
mod listings;
mod metrics;
mod output;
mod pipeline_attack;
mod probe;
mod proxy_protocol;
mod quoting;
mod reload;
mod scale_out;
mod tail_attack;
mod tls;
mod tls_attack;
mod tls_clients;
mod tls_rotation;
mod udp;
