//! The console's link pages: create (with the UTM builder), find a link by
//! code, bulk creation from a CSV upload (a result per row), a link's page
//! (its URL to copy, QR code, disable), and the QR downloads.

use super::views::LinkView;
use super::{download, render, see_other, Chrome, Ctx};
use crate::edge::http::{ApiError, Body};
use askama::Template;
use hyper::{Method, Response};
use serde_json::json;

/// The UTM builder's fields, in the order they are added.
pub const UTM_FIELDS: [&str; 5] = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
];

/// `destination` with the UTM parameters given added to its query (a
/// parameter already there is replaced); the API checks the result.
pub fn with_utm(destination: &str, utm: &[(&str, &str)]) -> Result<String, ApiError> {
    if utm.iter().all(|(_, v)| v.is_empty()) {
        return Ok(destination.to_string());
    }
    let mut url = url::Url::parse(destination)
        .map_err(|e| ApiError::invalid("destination", format!("is not a URL: {e}")))?;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !utm.iter().any(|(u, v)| !v.is_empty() && k == u))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        q.extend_pairs(kept);
        q.extend_pairs(utm.iter().filter(|(_, v)| !v.is_empty()));
    }
    Ok(url.to_string())
}

#[derive(Template)]
#[template(path = "link.html")]
struct LinkPage {
    chrome: Chrome,
    l: LinkView,
    chart: String,
    /// Clicks of the last 30 days by referrer host and device class,
    /// most first.
    hosts: Vec<(String, u64)>,
    devices: Vec<(String, u64)>,
}

#[derive(serde::Deserialize)]
struct LinkStats {
    #[serde(flatten)]
    days: super::views::CountedDays,
    referrer_hosts: std::collections::BTreeMap<String, u64>,
    devices: std::collections::BTreeMap<String, u64>,
}

fn most_first(m: std::collections::BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// The CSV's columns; `code` and the UTM ones may be empty.
pub const CSV_COLUMNS: [&str; 8] = [
    "partner_id",
    "destination",
    "code",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
];

/// Most rows one upload may hold.
pub const MAX_CSV_ROWS: usize = 1000;

/// One row's outcome.
pub struct RowResult {
    /// Line in the file (the header is line 1).
    pub line: usize,
    pub partner_id: String,
    pub outcome: Result<LinkView, String>,
}

#[derive(Template)]
#[template(path = "links.html")]
struct LinksPage {
    chrome: Chrome,
    columns: String,
    max_rows: usize,
    results: Vec<RowResult>,
    created: usize,
}

/// `/console/links...`
pub(super) async fn handle(ctx: &mut Ctx, r: &[&str]) -> Result<Response<Body>, ApiError> {
    match (&ctx.method, r) {
        (&Method::GET, []) => {
            if let Some(code) = ctx.q("code").map(str::trim).filter(|c| !c.is_empty()) {
                let l: LinkView = ctx.api(Method::GET, &format!("links/{code}"), None).await?;
                return Ok(see_other(&format!("/console/links/{}", l.code)));
            }
            links_page(ctx, Vec::new())
        }
        (&Method::POST, []) => create(ctx).await,
        (&Method::POST, ["bulk"]) => {
            let rows = parse_csv(ctx.field("csv"))?;
            let mut results = Vec::with_capacity(rows.len());
            for (line, row) in rows {
                let outcome = create_row(ctx, &row).await.map_err(|e| describe(&e));
                results.push(RowResult {
                    line,
                    partner_id: row.get("partner_id").cloned().unwrap_or_default(),
                    outcome,
                });
            }
            links_page(ctx, results)
        }
        (&Method::GET, [code]) => {
            let l: LinkView = ctx.api(Method::GET, &format!("links/{code}"), None).await?;
            let stats: LinkStats = ctx
                .api(Method::GET, &format!("links/{code}/stats"), None)
                .await?;
            render(&LinkPage {
                chrome: Chrome::of(ctx),
                l,
                chart: stats.days.chart("Clicks per day, last 30 days"),
                hosts: most_first(stats.referrer_hosts),
                devices: most_first(stats.devices),
            })
        }
        (&Method::POST, [code, "disable"]) => {
            let l: LinkView = ctx
                .api(Method::DELETE, &format!("links/{code}"), None)
                .await?;
            Ok(see_other(&format!(
                "/console/links/{}?done=disabled",
                l.code
            )))
        }
        (&Method::GET, [code, file]) => qr_download(ctx, code, file).await,
        _ => Err(ApiError::NotFound("page")),
    }
}

fn links_page(ctx: &Ctx, results: Vec<RowResult>) -> Result<Response<Body>, ApiError> {
    render(&LinksPage {
        chrome: Chrome::of(ctx),
        columns: CSV_COLUMNS.join(","),
        max_rows: MAX_CSV_ROWS,
        created: results.iter().filter(|r| r.outcome.is_ok()).count(),
        results,
    })
}

/// A link from named fields (the form's, or a CSV row's).
async fn create_from(ctx: &Ctx, field: impl Fn(&str) -> String) -> Result<LinkView, ApiError> {
    let utm_values: Vec<String> = UTM_FIELDS.iter().map(|f| field(f)).collect();
    let utm: Vec<(&str, &str)> = UTM_FIELDS
        .iter()
        .zip(&utm_values)
        .map(|(f, v)| (*f, v.as_str()))
        .collect();
    let destination = with_utm(&field("destination"), &utm)?;
    let mut body = json!({"partner_id": field("partner_id"), "destination": destination});
    let code = field("code");
    if !code.is_empty() {
        body["code"] = json!(code);
    }
    ctx.api(Method::POST, "links", Some(body)).await
}

/// A link from the form's fields (the console's and the portal's).
pub(super) async fn create_from_form(ctx: &Ctx) -> Result<LinkView, ApiError> {
    create_from(ctx, |f| ctx.field(f).to_string()).await
}

async fn create(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let l = create_from_form(ctx).await?;
    Ok(see_other(&format!("/console/links/{}?done=link", l.code)))
}

async fn create_row(ctx: &Ctx, row: &Row) -> Result<LinkView, ApiError> {
    create_from(ctx, |f| {
        row.get(f).map(|v| v.trim().to_string()).unwrap_or_default()
    })
    .await
}

/// What went wrong with a row, as its result says it.
fn describe(e: &ApiError) -> String {
    match e {
        ApiError::Invalid { field, reason } => format!("{field}: {reason}"),
        other => other.to_string(),
    }
}

/// A CSV row: column → value.
pub type Row = std::collections::HashMap<String, String>;

/// The rows of an uploaded CSV by line, as column → value; the header
/// must name only known columns and at least `partner_id` and
/// `destination`.
pub fn parse_csv(text: &str) -> Result<Vec<(usize, Row)>, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "csv",
            "choose a CSV file with a header row",
        ));
    }
    let mut r = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = r
        .headers()
        .map_err(|e| ApiError::invalid("csv", format!("header: {e}")))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    if let Some(bad) = header.iter().find(|h| !CSV_COLUMNS.contains(&h.as_str())) {
        return Err(ApiError::invalid(
            "csv",
            format!(
                "unknown column {bad:?}; the columns are {}",
                CSV_COLUMNS.join(",")
            ),
        ));
    }
    for need in ["partner_id", "destination"] {
        if !header.iter().any(|h| h == need) {
            return Err(ApiError::invalid(
                "csv",
                format!("the header has no {need} column"),
            ));
        }
    }
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| ApiError::invalid("csv", format!("line {line}: {e}")))?;
        if rows.len() == MAX_CSV_ROWS {
            return Err(ApiError::invalid(
                "csv",
                format!("more than {MAX_CSV_ROWS} rows; split the file"),
            ));
        }
        let row = header
            .iter()
            .cloned()
            .zip(rec.iter().map(str::to_string))
            .collect();
        rows.push((line, row));
    }
    Ok(rows)
}

/// `qr.svg` / `qr.png` of a link the principal may read (the API's rule).
pub(super) async fn qr_download(
    ctx: &Ctx,
    code: &str,
    file: &str,
) -> Result<Response<Body>, ApiError> {
    let l: LinkView = ctx.api(Method::GET, &format!("links/{code}"), None).await?;
    match file {
        "qr.svg" => {
            let svg = super::qr::svg(&l.url).map_err(ApiError::Internal)?;
            Ok(download(
                "image/svg+xml",
                &format!("{}.svg", l.code),
                svg.into_bytes(),
            ))
        }
        "qr.png" => {
            let png = super::qr::png(&l.url).map_err(ApiError::Internal)?;
            Ok(download("image/png", &format!("{}.png", l.code), png))
        }
        _ => Err(ApiError::NotFound("page")),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_csv, with_utm};

    #[test]
    fn a_csv_is_read_by_its_header() {
        let rows = parse_csv(
            "\u{feff}destination,partner_id,code,utm_source\n\
             https://x.example/a,p_1,,news\n\
             \"https://x.example/b?q=1,2\",p_2,bee,\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, 2);
        assert_eq!(rows[0].1["partner_id"], "p_1");
        assert_eq!(rows[1].1["destination"], "https://x.example/b?q=1,2");
        assert_eq!(rows[1].1["code"], "bee");
        let e = |t: &str| match parse_csv(t) {
            Err(crate::edge::http::ApiError::Invalid { reason, .. }) => reason,
            other => panic!("{t}: {:?}", other.map(|r| r.len())),
        };
        assert!(e("partner_id,url\n").contains("unknown column \"url\""));
        assert!(e("partner_id,code\n").contains("no destination column"));
        assert!(e("partner_id,destination\np_1\n").contains("line 2"));
        assert!(e("").contains("choose a CSV file"));
    }

    #[test]
    fn utm_parameters_join_the_destination() {
        let u = with_utm(
            "https://www.example.com/pricing?plan=pro&utm_source=old",
            &[
                ("utm_source", "news letter"),
                ("utm_medium", ""),
                ("utm_campaign", "spring"),
            ],
        )
        .unwrap();
        assert_eq!(
            u,
            "https://www.example.com/pricing?plan=pro&utm_source=news+letter&utm_campaign=spring"
        );
        assert_eq!(
            with_utm("https://x.example/", &[("utm_source", "")]).unwrap(),
            "https://x.example/"
        );
        assert!(with_utm("not a url", &[("utm_source", "a")]).is_err());
    }
}
