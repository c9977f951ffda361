//! Usage reports (App-V's reporting database queries): launch counts and the
//! clients with their cached packages, read from the Reporting DB. What the
//! reporting role stored is here as soon as its `POST` has answered.

use std::collections::HashMap;

use avail_model::*;
use axum::Json;
use axum::extract::{Query, State};

use super::AppState;
use crate::auth::Admin;
use crate::error::ApiResult;
use avail_model::api::*;

/// Launch counts, most launches first: per application and day, per user, per
/// package version, or per application.
#[utoipa::path(get, path = "/api/v1/reports/launches", tag = "reports", params(LaunchesQuery),
    responses((status = 200, body = Vec<LaunchCount>)))]
pub(super) async fn report_launches(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<LaunchesQuery>,
) -> ApiResult<Json<Vec<LaunchCount>>> {
    let grouping = match query.by {
        LaunchesBy::Day | LaunchesBy::Application => LaunchGrouping::ApplicationPerDay,
        LaunchesBy::User => LaunchGrouping::User,
        LaunchesBy::Package => LaunchGrouping::Package,
    };
    let counts = state.reporting.launches(grouping).await?;
    Ok(Json(if query.by == LaunchesBy::Application {
        per_application(counts)
    } else {
        counts
    }))
}

/// Per-day counts summed per application, most launches first (then by name).
fn per_application(per_day: Vec<LaunchCount>) -> Vec<LaunchCount> {
    let mut sums: HashMap<String, i64> = HashMap::new();
    for count in per_day {
        *sums.entry(count.key).or_default() += count.launches;
    }
    let mut counts: Vec<LaunchCount> = sums
        .into_iter()
        .map(|(key, launches)| LaunchCount {
            key,
            day: None,
            launches,
        })
        .collect();
    counts.sort_by(|a, b| b.launches.cmp(&a.launches).then_with(|| a.key.cmp(&b.key)));
    counts
}

/// Every client that reported, with its packages and their cache percentages.
#[utoipa::path(get, path = "/api/v1/reports/clients", tag = "reports",
    responses((status = 200, body = Vec<ClientCache>)))]
pub(super) async fn report_clients(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<ClientCache>>> {
    Ok(Json(state.reporting.client_caches().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_application_sums_the_days() {
        let count = |key: &str, day: u32, launches| LaunchCount {
            key: key.into(),
            day: chrono::NaiveDate::from_ymd_opt(2026, 1, day),
            launches,
        };
        let counts = per_application(vec![
            count("b", 1, 2),
            count("a", 1, 1),
            count("a", 2, 2),
            count("c", 2, 3),
        ]);
        let got: Vec<(&str, i64, bool)> = counts
            .iter()
            .map(|c| (c.key.as_str(), c.launches, c.day.is_none()))
            .collect();
        assert_eq!(got, [("a", 3, true), ("c", 3, true), ("b", 2, true)]);
    }
}
