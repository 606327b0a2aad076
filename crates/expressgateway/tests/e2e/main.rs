//! End-to-end tests: the real `expressgateway` binary on loopback with real
//! backends and real clients. One test binary; each area is a module.

mod support;

mod balancing;
mod config_boot;
mod demo;
mod edge_admin;
mod edge_h2;
mod edge_http;
mod edge_quic;
mod edge_quic_relay;
mod forward_failures;
mod h3_curl;
mod h3_matrix;
mod h3_thirdparty;
mod http_defences;
mod http_matrix;
mod http_routing;
mod http_thirdparty;
mod ops;
mod quic;
mod quic_relay;
mod tcp;
mod tls;
mod websocket;
mod websocket_h2h3;
