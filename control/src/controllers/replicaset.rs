//! TEMPORARY placeholder: the real controller replaces this file.

use std::sync::Arc;

use super::Settings;

/// Runs the controller until dropped.
pub async fn run(_client: kube::Client, _settings: Arc<Settings>) {
    std::future::pending::<()>().await;
}
