//! End-to-end tests: the real `expressgateway` binary on loopback with real
//! backends and real clients. One test binary; each area is a module.

mod support;

mod access_log;
mod admin_api;
mod balancing;
mod config_boot;
mod demo;
mod dns_discovery;
mod edge_admin;
mod edge_h2;
mod edge_http;
mod edge_quic;
mod edge_quic_relay;
mod forward_failures;
mod grpc;
mod grpc_h3;
mod h3_curl;
mod h3_matrix;
mod h3_thirdparty;
mod http_defences;
mod http_matrix;
mod http_routing;
mod http_thirdparty;
mod ops;
mod ops_reload;
mod packaging;
mod passthrough;
mod passthrough_interop;
mod passthrough_quic_lb;
mod quic;
mod quic_0rtt;
mod quic_interop;
mod quic_interop_relay;
mod quic_relay;
mod quic_versions;
mod reload_state;
mod status_page;
mod tcp;
mod tls;
mod upstream_pool;
mod websocket;
mod websocket_h2h3;
mod xdp;
