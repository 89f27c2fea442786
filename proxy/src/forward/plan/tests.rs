use super::*;
use anymesh_core::routes::{DirectResponse, HeaderOps, RequestMatch, Rewrite};
use http::Request;

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
        retry: anymesh_core::routes::RetryPolicy::istio_default(),
        fault: None,
        mirrors: Vec::new(),
        mirror_compare: None,
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
    assert_eq!(resp.headers()[LOCATION], "https://web:8443/v2?a");
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
    assert_eq!(request_authority(req.uri(), req.headers()), Ok("web:81"));
    let req = Request::builder()
        .uri("/x")
        .header(HOST, "web")
        .body(())
        .unwrap();
    assert_eq!(request_authority(req.uri(), req.headers()), Ok("web"));
    let req = Request::builder().uri("/x").body(()).unwrap();
    assert!(request_authority(req.uri(), req.headers()).is_err());
    let req = Request::builder()
        .uri("/x")
        .header(HOST, "a")
        .header(HOST, "b")
        .body(())
        .unwrap();
    assert_eq!(
        request_authority(req.uri(), req.headers()),
        Err("request has more than one Host header")
    );
    let req = Request::builder()
        .uri("http://user:secret@web/x")
        .body(())
        .unwrap();
    let err = request_authority(req.uri(), req.headers()).unwrap_err();
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn rewrite_without_uri_match_treats_the_route_as_prefix_slash() {
    let header_only = RequestMatch {
        method: Some(StringMatch::Exact("GET".into())),
        ..Default::default()
    };
    let r = route(vec![header_only], Some("/"));
    let uri: Uri = "/foo/bar?q=1".parse().unwrap();
    assert_eq!(
        rewritten_path(&r, Some(0), &uri).unwrap().as_str(),
        "/foo/bar?q=1"
    );
    let r = route(vec![], Some("/v2/"));
    assert_eq!(
        rewritten_path(&r, None, &uri).unwrap().as_str(),
        "/v2/foo/bar?q=1"
    );
}

#[test]
fn redirect_keeps_query_and_handles_ipv6_ports() {
    let uri: Uri = "/old/x?keep=1".parse().unwrap();
    let r = Redirect {
        uri: Some("/new".into()),
        authority: None,
        port: None,
        scheme: None,
        code: 301,
    };
    assert_eq!(
        redirect(&r, "plain", &uri).headers()[LOCATION],
        "http://plain/new?keep=1"
    );
    let r = Redirect {
        uri: Some("/new?x=2".into()),
        authority: None,
        port: None,
        scheme: None,
        code: 301,
    };
    assert_eq!(
        redirect(&r, "plain", &uri).headers()[LOCATION],
        "http://plain/new?x=2"
    );
    let r = Redirect {
        uri: None,
        authority: None,
        port: Some(8080),
        scheme: None,
        code: 301,
    };
    assert_eq!(
        redirect(&r, "[::1]:80", &uri).headers()[LOCATION],
        "http://[::1]:8080/old/x?keep=1"
    );
    assert_eq!(
        redirect(&r, "[::1]", &uri).headers()[LOCATION],
        "http://[::1]:8080/old/x?keep=1"
    );
}

#[test]
fn connect_and_upgrades_are_refused() {
    let req = Request::builder()
        .method("CONNECT")
        .uri("web:443")
        .body(())
        .unwrap();
    assert!(unsupported(req.method(), req.headers()).is_some());
    let req = Request::builder()
        .uri("/")
        .header("upgrade", "websocket")
        .body(())
        .unwrap();
    assert!(unsupported(req.method(), req.headers()).is_some());
    let req = Request::builder()
        .uri("/")
        .header("upgrade", "h2c")
        .body(())
        .unwrap();
    assert!(unsupported(req.method(), req.headers()).is_none());
    let req = Request::builder().uri("/").body(()).unwrap();
    assert!(unsupported(req.method(), req.headers()).is_none());
}
