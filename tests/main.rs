//! The integration tests: one binary, real daemon on port 0, real simulated upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod smoke;

mod activity;
mod activity_snapshot;
mod billing;
mod browser;
mod cli;
mod console;
mod errors;
mod faults;
mod hardening;
mod install;
mod lifecycle;
mod models;
mod ops;
mod page_demo;
mod page_forms;
mod pages;
mod python_client;
mod robustness;
mod shop_orders;
