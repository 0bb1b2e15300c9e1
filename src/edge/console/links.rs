//! The console's link pages: create (with the UTM builder), a link's page
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
}

/// `/console/links...`
pub(super) async fn handle(ctx: &mut Ctx, r: &[&str]) -> Result<Response<Body>, ApiError> {
    match (&ctx.method, r) {
        (&Method::POST, []) => create(ctx).await,
        (&Method::GET, [code]) => {
            let l: LinkView = ctx.api(Method::GET, &format!("links/{code}"), None).await?;
            render(&LinkPage {
                chrome: Chrome::of(ctx),
                l,
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

async fn create(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let utm: Vec<(&str, &str)> = UTM_FIELDS.iter().map(|f| (*f, ctx.field(f))).collect();
    let destination = with_utm(ctx.field("destination"), &utm)?;
    let mut body = json!({"partner_id": ctx.field("partner_id"), "destination": destination});
    if !ctx.field("code").is_empty() {
        body["code"] = json!(ctx.field("code"));
    }
    let l: LinkView = ctx.api(Method::POST, "links", Some(body)).await?;
    Ok(see_other(&format!("/console/links/{}?done=link", l.code)))
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
    use super::with_utm;

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
