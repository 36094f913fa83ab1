//! The Prometheus check of an analysis: a PromQL instant query
//! (`GET URL/api/v1/query`) whose one value is compared with a bound. A
//! server that cannot be asked, a query that fails, and an answer that is
//! not one number (no series, several series, NaN) are inconclusive, with
//! the reason as the measured value.

use std::time::Duration;

use serde::Deserialize;

use crate::model::{CheckResult, PrometheusCheck};

/// How long one query may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer read (an instant query of one series is small).
const MAX_ANSWER: usize = 1024 * 1024;

/// Prometheus' answer envelope.
#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

/// Runs the query and judges its value.
pub(super) async fn judge(query: &PrometheusCheck) -> CheckResult {
    let name = format!("prometheus {}", query.query);
    let threshold = format!("{} {}", query.op, query.value);
    match value_of(query).await {
        Ok(v) => super::check(
            &name,
            Some(query.op.holds(v, query.value)),
            format_value(v),
            threshold,
        ),
        Err(why) => super::check(&name, None, why, threshold),
    }
}

fn format_value(v: f64) -> String {
    let text = format!("{v:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// The query's one value, or why there is none.
async fn value_of(query: &PrometheusCheck) -> Result<f64, String> {
    let mut url = url::Url::parse(&format!("{}/api/v1/query", query.url.trim_end_matches('/')))
        .map_err(|e| format!("`{}` is not a URL: {e}", query.url))?;
    url.query_pairs_mut().append_pair("query", &query.query);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot ask {}: {e}", query.url))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("{} broke off its answer: {e}", query.url))?;
    if body.len() > MAX_ANSWER {
        return Err(format!(
            "the answer is over {MAX_ANSWER} bytes; aggregate the query to one series"
        ));
    }
    let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
        format!(
            "{} answered {} with something other than a Prometheus answer",
            query.url,
            status.as_u16()
        )
    })?;
    if answer.status != "success" {
        return Err(format!(
            "the query failed: {}",
            answer.error.unwrap_or_else(|| format!("status {status}"))
        ));
    }
    let data = answer
        .data
        .ok_or_else(|| "the answer has no data".to_owned())?;
    one_value(&data)
}

/// The number of a scalar, or of a vector of exactly one sample.
fn one_value(data: &Data) -> Result<f64, String> {
    let sample = match data.result_type.as_str() {
        "scalar" => &data.result,
        "vector" => {
            let series = data.result.as_array().map_or(&[][..], Vec::as_slice);
            match series {
                [] => return Err("no data: the query matched no series".into()),
                [one] => &one["value"],
                many => {
                    return Err(format!(
                        "{} series; the query must give one (aggregate it, e.g. with sum(…))",
                        many.len()
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "a {other} result; the query must give one number (an instant vector of one series or a scalar)"
            ));
        }
    };
    let value: f64 = sample
        .get(1)
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "the sample has no value".to_owned())?;
    if value.is_nan() {
        return Err("the value is NaN (a ratio of nothing?)".into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(kind: &str, result: serde_json::Value) -> Data {
        Data {
            result_type: kind.into(),
            result,
        }
    }

    #[test]
    fn one_number_is_read_from_a_scalar_or_a_single_series() {
        let scalar = data("scalar", serde_json::json!([1.0, "0.25"]));
        assert_eq!(one_value(&scalar), Ok(0.25));
        let vector = data(
            "vector",
            serde_json::json!([{ "metric": {}, "value": [1.0, "3"] }]),
        );
        assert_eq!(one_value(&vector), Ok(3.0));
    }

    #[test]
    fn no_series_several_series_and_nan_are_reasons() {
        let none = one_value(&data("vector", serde_json::json!([]))).expect_err("empty");
        assert!(none.contains("no data"), "{none}");
        let two = serde_json::json!([
            { "metric": { "a": "1" }, "value": [1.0, "1"] },
            { "metric": { "a": "2" }, "value": [1.0, "2"] }
        ]);
        let many = one_value(&data("vector", two)).expect_err("two");
        assert!(many.contains("2 series"), "{many}");
        let nan = one_value(&data("scalar", serde_json::json!([1.0, "NaN"]))).expect_err("nan");
        assert!(nan.contains("NaN"), "{nan}");
    }

    #[test]
    fn values_print_without_trailing_zeros() {
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.0), "0");
    }
}
