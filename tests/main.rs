//! The integration tests: one binary, real daemon on port 0, real simulated upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod smoke;

mod activity;
mod activity_snapshot;
mod billing;
mod billing_balances;
mod billing_holds;
mod browser;
mod cli;
mod cli_admin_socket;
mod cli_check_config;
mod console;
mod errors;
mod errors_routes;
mod errors_upstream;
mod faults;
mod faults_clients;
mod faults_streams;
mod faults_usage;
mod hardening;
mod hardening_cli;
mod hardening_shop;
mod hardening_socket;
mod install;
mod lifecycle;
mod models;
mod ops;
mod page_demo;
mod page_forms;
mod pages;
mod python_client;
mod robustness;
mod selfservice_topup;
mod shop_orders;
