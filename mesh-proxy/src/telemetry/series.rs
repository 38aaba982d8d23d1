//! The handles of one request label set's series, found with one map lookup per request
//! instead of one per metric family. The families still own and encode the series; this map
//! only keeps clones of their handles (counters and histograms share their state).

use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::Telemetry;
use super::custom::RequestKey;
use super::labels::RequestLabels;
use crate::fast_map::FastMap;

/// The series a request with one label set adds to.
pub struct RequestSeries {
    pub requests: Counter,
    pub duration: Histogram,
    pub request_bytes: Histogram,
    pub response_bytes: Histogram,
}

#[derive(Default)]
pub struct SeriesCache {
    map: RwLock<FastMap<RequestLabels, Arc<RequestSeries>>>,
}

impl Telemetry {
    /// The series of `labels`, created in every family the first time.
    pub(super) fn request_series(&self, labels: &RequestLabels) -> Arc<RequestSeries> {
        // A poisoned lock only means a panic elsewhere while inserting; the map is intact.
        let cache = &self.series.map;
        if let Some(s) = cache.read().unwrap_or_else(|e| e.into_inner()).get(labels) {
            return s.clone();
        }
        let key = RequestKey::Standard(labels.clone());
        let series = Arc::new(RequestSeries {
            requests: self.requests.get_or_create(&key).clone(),
            duration: self.duration.get_or_create(&key).clone(),
            request_bytes: self.request_bytes.get_or_create(&key).clone(),
            response_bytes: self.response_bytes.get_or_create(&key).clone(),
        });
        cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(labels.clone())
            .or_insert(series)
            .clone()
    }
}
