//! Shared helpers for the integration tests (`mod support;` in a test file).
#![allow(dead_code)] // each test file uses a different part

pub mod backend;
pub mod demo;
pub mod in_process;
pub mod redis_server;
pub mod upstream;
