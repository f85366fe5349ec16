//! The browser tests' helpers: the Chromium harness, and the demo-process
//! harness shared with the main crate's black-box tests.
#![allow(dead_code)] // each test file uses a different part

pub mod browser;
#[path = "../../../tests/support/demo.rs"]
pub mod demo;
