//! `meshctl up --prometheus`: the real Prometheus server (the `prometheus` binary on PATH)
//! scraping every proxy's `/stats/prometheus` and pilot's `/metrics`, on localhost, its data
//! under the state directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::fleet::Fleet;

/// How often Prometheus scrapes: short, so a local mesh's graphs move within seconds of
/// traffic (a handful of loopback targets costs nothing).
pub const SCRAPE_INTERVAL_SECONDS: u32 = 2;

/// One proxy to scrape, named after its workload for the `instance`'s readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTarget {
    pub workload: String,
    pub namespace: String,
    pub admin: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error(
        "--prometheus needs the `prometheus` binary on PATH (Debian/Ubuntu: apt-get install prometheus)"
    )]
    NotInstalled,
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Where a program of that name is on `path` (a `PATH` value), if anywhere.
pub fn find_on_path(program: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Prometheus's configuration: a job for the proxies (one static group per proxy, labelled
/// with its workload) and one for pilot.
pub fn config(proxies: &[ProxyTarget], pilot: SocketAddr) -> String {
    let mut out = format!(
        "# Written by `meshctl up --prometheus`; rewritten at every start.\n\
         global:\n  scrape_interval: {SCRAPE_INTERVAL_SECONDS}s\n  evaluation_interval: {SCRAPE_INTERVAL_SECONDS}s\n\
         scrape_configs:\n  - job_name: mesh-proxies\n    metrics_path: /stats/prometheus\n    static_configs:\n"
    );
    let mut seen = std::collections::BTreeSet::new();
    for p in proxies {
        // Two proxies on one admin address cannot both run; scrape the address once.
        if !seen.insert(p.admin) {
            continue;
        }
        out.push_str(&format!(
            "      - targets: ['{}']\n        labels: {{ workload: '{}', namespace: '{}' }}\n",
            p.admin, p.workload, p.namespace
        ));
    }
    out.push_str(&format!(
        "  - job_name: mesh-pilot\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{pilot}']\n"
    ));
    out
}

/// The command line for Prometheus listening on `listen`, with its files under `dir`.
pub fn args(dir: &Path, listen: SocketAddr) -> Vec<String> {
    vec![
        format!("--config.file={}", dir.join("prometheus.yml").display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={listen}"),
        // A local mesh's metrics are for now, not for history.
        "--storage.tsdb.retention.time=1d".into(),
        // Its info lines would drown the mesh's own log on the terminal.
        "--log.level=warn".into(),
    ]
}

/// The `prometheus` binary on PATH, looked up before anything starts.
pub fn binary() -> Result<PathBuf, String> {
    find_on_path("prometheus", std::env::var_os("PATH").as_deref())
        .ok_or_else(|| PrometheusError::NotInstalled.to_string())
}

/// Writes the config under `state_dir/prometheus` and starts `binary` in `fleet`.
pub fn start(
    fleet: &mut Fleet,
    binary: &Path,
    state_dir: &Path,
    listen: SocketAddr,
    proxies: &[ProxyTarget],
    pilot: SocketAddr,
) -> Result<(), String> {
    let dir = state_dir.join("prometheus");
    let file = dir.join("prometheus.yml");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, config(proxies, pilot)))
        .map_err(|e| {
            PrometheusError::Write {
                path: file.clone(),
                reason: e.to_string(),
            }
            .to_string()
        })?;
    fleet.spawn("prometheus".into(), binary, &args(&dir, listen))
}

/// Istio's success rate per service (non-5xx over all, as the destination proxies saw it).
pub const SUCCESS_RATE_QUERY: &str = "sum by (destination_service_name) (rate(istio_requests_total{reporter=\"destination\",response_code!~\"5..\"}[1m])) / sum by (destination_service_name) (rate(istio_requests_total{reporter=\"destination\"}[1m]))";

/// The banner's lines about Prometheus: where it is, a query to try, the dashboard command.
pub fn banner(listen: SocketAddr, proxies: usize, state_dir: &Path) -> String {
    format!(
        "\nprometheus: http://{listen} (scraping {proxies} proxies and pilot every {SCRAPE_INTERVAL_SECONDS}s; data in {})\n\
         try:  curl -s http://{listen}/api/v1/query --data-urlencode 'query={SUCCESS_RATE_QUERY}'\n\
         \x20     meshctl dashboard --prometheus http://{listen}\n",
        state_dir.join("prometheus").display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(workload: &str, admin: &str) -> ProxyTarget {
        ProxyTarget {
            workload: workload.into(),
            namespace: "default".into(),
            admin: admin.parse().unwrap(),
        }
    }

    #[test]
    fn the_config_scrapes_every_proxy_once_and_pilot() {
        let text = config(
            &[
                target("productpage-v1", "127.0.0.1:15100"),
                target("reviews-v1", "127.0.0.1:15102"),
                target("clash", "127.0.0.1:15102"),
            ],
            "127.0.0.1:15014".parse().unwrap(),
        );
        assert_eq!(
            text,
            "# Written by `meshctl up --prometheus`; rewritten at every start.\n\
             global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n\
             scrape_configs:\n  - job_name: mesh-proxies\n    metrics_path: /stats/prometheus\n    static_configs:\n\
             \x20     - targets: ['127.0.0.1:15100']\n        labels: { workload: 'productpage-v1', namespace: 'default' }\n\
             \x20     - targets: ['127.0.0.1:15102']\n        labels: { workload: 'reviews-v1', namespace: 'default' }\n\
             \x20 - job_name: mesh-pilot\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['127.0.0.1:15014']\n"
        );
    }

    #[test]
    fn prometheus_listens_where_asked_and_keeps_its_files_in_its_dir() {
        let a = args(
            Path::new("/s/prometheus"),
            "127.0.0.1:9090".parse().unwrap(),
        );
        assert!(a.contains(&"--config.file=/s/prometheus/prometheus.yml".to_string()));
        assert!(a.contains(&"--storage.tsdb.path=/s/prometheus/data".to_string()));
        assert!(a.contains(&"--web.listen-address=127.0.0.1:9090".to_string()));
    }

    #[test]
    fn the_binary_is_looked_up_on_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus"), "").unwrap();
        let path = std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        assert_eq!(
            find_on_path("prometheus", Some(&path)),
            Some(dir.path().join("prometheus"))
        );
        assert_eq!(find_on_path("absent-program", Some(&path)), None);
        assert_eq!(find_on_path("prometheus", None), None);
    }
}
