use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use eg_config::BackendProtocol;

/// Health as selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    /// Skipped by every policy (failed checks, ejected, or drained by hand).
    Down,
}

/// One backend of a pool and its live counters.
#[derive(Debug)]
pub struct BackendState {
    /// `host:port` as configured.
    pub address: String,
    pub protocol: BackendProtocol,
    pub weight: u32,
    /// Index within the pool, stable for the pool's lifetime.
    pub index: usize,
    up: AtomicBool,
    in_flight: AtomicU64,
}

impl BackendState {
    pub(crate) fn new(
        index: usize,
        address: String,
        protocol: BackendProtocol,
        weight: u32,
    ) -> Self {
        Self {
            address,
            protocol,
            weight,
            index,
            up: AtomicBool::new(true),
            in_flight: AtomicU64::new(0),
        }
    }

    pub fn health(&self) -> Health {
        if self.up.load(Ordering::Relaxed) {
            Health::Up
        } else {
            Health::Down
        }
    }

    pub fn set_health(&self, health: Health) {
        self.up.store(health == Health::Up, Ordering::Relaxed);
    }

    /// Requests or connections currently using this backend.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
