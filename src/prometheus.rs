//! The Prometheus exporter (feature `prometheus`): installs the recorder that the server's
//! meters report to, and renders the scrape. Mount it on an HTTP binding with
//! [`HttpBind::metrics`](crate::http::HttpBind::metrics), or serve [`Prometheus::render`]
//! from the application's own router.
//!
//! The metrics and their labels are listed in the README ("Metrics").

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::{ConfigError, Error};

/// The installed Prometheus recorder. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Prometheus {
    handle: PrometheusHandle,
}

impl Prometheus {
    /// Installs the Prometheus recorder as this process's `metrics` recorder. Install it
    /// before starting servers: a server registers its meters when it starts.
    ///
    /// Fails with [`ConfigError::Recorder`] if another recorder is installed already.
    pub fn install() -> Result<Prometheus, Error> {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .map_err(|error| ConfigError::Recorder(error.to_string()))?;
        Ok(Prometheus { handle })
    }

    /// The current values in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
