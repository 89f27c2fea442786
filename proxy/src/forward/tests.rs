use super::*;
use anymesh_core::routes::{DirectResponse, HeaderOps, RequestMatch, Rewrite};

fn route(matches: Vec<RequestMatch>, rewrite: Option<&str>) -> Route {
    Route {
        name: "r".into(),
        matches,
        action: RouteAction::DirectResponse(DirectResponse {
            status: 200,
            body: None,
        }),
        timeout: None,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        rewrite: rewrite.map(|u| Rewrite {
            uri: Some(u.into()),
            authority: None,
        }),
    }
}

fn prefix(p: &str) -> RequestMatch {
    RequestMatch {
        uri: Some(StringMatch::Prefix(p.into())),
        ..Default::default()
    }
}

#[test]
fn rewrite_replaces_matched_prefix_and_keeps_query() {
    let r = route(vec![prefix("/old")], Some("/new"));
    let uri: Uri = "/old/a/b?x=1".parse().unwrap();
    assert_eq!(
        rewritten_path(&r, Some(0), &uri).unwrap().as_str(),
        "/new/a/b?x=1"
    );
    let r = route(vec![prefix("/api/")], Some("/"));
    let uri: Uri = "/api/v1".parse().unwrap();
    assert_eq!(rewritten_path(&r, Some(0), &uri).unwrap().as_str(), "/v1");
    let r = route(vec![prefix("/api")], Some("/"));
    let uri: Uri = "/api/v1".parse().unwrap();
    assert_eq!(rewritten_path(&r, Some(0), &uri).unwrap().as_str(), "/v1");
}

#[test]
fn rewrite_without_prefix_match_replaces_whole_path() {
    let r = route(
        vec![RequestMatch {
            uri: Some(StringMatch::Exact("/x".into())),
            ..Default::default()
        }],
        Some("/y"),
    );
    let uri: Uri = "/x".parse().unwrap();
    assert_eq!(rewritten_path(&r, Some(0), &uri).unwrap().as_str(), "/y");
    let r = route(vec![], None);
    let uri: Uri = "/keep?q".parse().unwrap();
    assert_eq!(rewritten_path(&r, None, &uri).unwrap().as_str(), "/keep?q");
}

#[test]
fn redirect_builds_location() {
    let r = Redirect {
        uri: Some("/v2".into()),
        authority: None,
        port: Some(8443),
        scheme: Some("https".into()),
        code: 302,
    };
    let uri: Uri = "/v1?a".parse().unwrap();
    let resp = redirect(&r, "web:80", &uri);
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()[LOCATION], "https://web:8443/v2");
    let r = Redirect {
        uri: None,
        authority: Some("other".into()),
        port: None,
        scheme: None,
        code: 301,
    };
    let resp = redirect(&r, "web", &uri);
    assert_eq!(resp.headers()[LOCATION], "http://other/v1?a");
}

#[test]
fn authority_from_uri_or_host() {
    let req = Request::builder()
        .uri("http://web:81/x")
        .header(HOST, "ignored")
        .body(())
        .unwrap();
    assert_eq!(request_authority(&req).as_deref(), Some("web:81"));
    let req = Request::builder()
        .uri("/x")
        .header(HOST, "web")
        .body(())
        .unwrap();
    assert_eq!(request_authority(&req).as_deref(), Some("web"));
    let req = Request::builder().uri("/x").body(()).unwrap();
    assert_eq!(request_authority(&req), None);
}
