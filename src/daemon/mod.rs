//! The daemon, `surveyd`: the data path config -> facts -> payload -> audit
//! -> transport, the `surveyd run` service around it and the command line.
//! docs/architecture.md is the map.

pub mod audit;
pub mod cfgfile;
pub mod cli;
pub mod facts;
pub mod forget;
pub mod payload;
pub mod receipts;
pub mod report;
pub mod scheduler;
pub mod service;
pub mod settings;
pub mod state;
pub mod transport;
