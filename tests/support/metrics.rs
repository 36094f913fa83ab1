//! serve's `/metrics` page, read series by series.

use super::Env;

/// One scrape of serve's `/metrics` (Prometheus text).
pub struct Metrics(pub String);

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Metrics {
    /// Scrapes serve's admin API.
    pub async fn scrape(env: &Env) -> Metrics {
        Metrics(env.metrics().await)
    }

    /// The value of the series `family{labels}`, labels in the order serve
    /// writes them; 0 when the page has no such series, so a test that
    /// expects a count fails.
    pub fn value(&self, family: &str, labels: &[(&str, &str)]) -> u64 {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let series = format!("{family}{{{}}} ", labels.join(","));
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .map(|v| v.trim().parse().expect("a whole number"))
            .unwrap_or(0)
    }

    /// The value of a series of one release of `service`, with one more
    /// label when the family has one.
    pub fn release(
        &self,
        family: &str,
        (service, version): (&str, &str),
        label: Option<(&str, &str)>,
    ) -> u64 {
        let mut labels = vec![("service", service), ("version", version)];
        labels.extend(label);
        self.value(family, &labels)
    }
}
