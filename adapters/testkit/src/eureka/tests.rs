//! The fake against the fixtures' shapes and Eureka's delta rules, over HTTP.

use serde_json::json;

use super::*;

async fn get(url: &str) -> (u16, Value) {
    let uri: hyper::Uri = url.parse().unwrap();
    let host = uri.authority().unwrap().to_string();
    let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(uri.path())
        .header("host", host)
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn full_and_delta_follow_the_registry_with_its_hashcode() {
    let e = FakeEureka::start().await;
    e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080));
    e.register(FakeInstance::new("web", "w2", "10.0.0.2", 8080).with_metadata("version", "v2"));
    assert!(e.set_status("web", "w2", "OUT_OF_SERVICE"));
    let (status, full) = get(&format!("{}/apps", e.url())).await;
    assert_eq!(status, 200);
    let apps = &full["applications"];
    assert_eq!(apps["apps__hashcode"], "OUT_OF_SERVICE_1_UP_1_");
    assert_eq!(apps["versions__delta"], "3");
    let inst = &apps["application"][0]["instance"];
    assert_eq!(inst[0]["port"], json!({"$": 8080, "@enabled": "true"}));
    assert_eq!(
        inst[0]["metadata"]["@class"],
        "java.util.Collections$EmptyMap"
    );
    assert_eq!(inst[1]["overriddenStatus"], "OUT_OF_SERVICE");
    assert_eq!(inst[1]["metadata"]["version"], "v2");

    assert!(e.cancel("web", "w1"));
    assert!(!e.cancel("web", "w1"), "a second cancel finds nothing");
    let (_, delta) = get(&format!("{}/apps/delta", e.url())).await;
    let apps = &delta["applications"];
    assert_eq!(
        apps["apps__hashcode"], "OUT_OF_SERVICE_1_",
        "the whole registry's"
    );
    let actions: Vec<&str> = apps["application"][0]["instance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["actionType"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["ADDED", "ADDED", "MODIFIED", "DELETED"]);
    assert_eq!(e.counts().full, 1);
    assert_eq!(e.counts().delta, 1);

    // Lost changes do not reach the queue but do change the hashcode.
    e.lose_changes(true);
    e.register(FakeInstance::new("api", "a1", "10.0.1.1", 9090));
    assert_eq!(e.queued_changes(), 4);
    assert_eq!(e.hashcode(), "OUT_OF_SERVICE_1_UP_1_");

    e.restart_empty();
    let (_, full) = get(&format!("{}/apps", e.url())).await;
    assert_eq!(full["applications"]["apps__hashcode"], "");
    assert_eq!(full["applications"]["application"], json!([]));
}

#[tokio::test]
async fn legacy_shape_fails_auth_and_forbids() {
    let e = FakeEureka::start().await;
    e.set_shape(Shape::Legacy);
    e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080));
    let (_, full) = get(&format!("{}/apps", e.url())).await;
    let inst = &full["applications"]["application"][0]["instance"];
    assert!(inst.is_object(), "a lone instance is an object: {inst}");
    assert_eq!(inst["port"]["$"], "8080");
    assert_eq!(inst["overriddenstatus"], "UNKNOWN");
    assert_eq!(full["applications"]["versions__delta"], 1);
    let (_, one) = get(&format!("{}/apps/WEB", e.url())).await;
    assert_eq!(one["application"]["name"], "WEB");
    assert_eq!(get(&format!("{}/apps/NONE", e.url())).await.0, 404);

    e.forbid_delta(true);
    assert_eq!(get(&format!("{}/apps/delta", e.url())).await.0, 403);
    e.fail_with(Some(503));
    assert_eq!(get(&format!("{}/apps", e.url())).await.0, 503);
    e.fail_with(None);
    e.require_auth("mesh", "s3cret");
    assert_eq!(get(&format!("{}/apps", e.url())).await.0, 401);
    assert_eq!(e.counts().unauthorized, 1);
    assert_eq!(e.counts().failed, 1);
}

async fn call(method: Method, url: &str, body: &str) -> u16 {
    let uri: hyper::Uri = url.parse().unwrap();
    let host = uri.authority().unwrap().to_string();
    let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let path = uri.path_and_query().unwrap().as_str().to_string();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    send.send_request(req).await.unwrap().status().as_u16()
}

/// Registration, status override, heartbeat and cancel over HTTP, as a
/// Spring service's Eureka client does them.
#[tokio::test]
async fn the_rest_operations_change_the_registry() {
    let e = FakeEureka::start().await;
    let base = e.url();
    let body = r#"{"instance":{"instanceId":"h:web:1","hostName":"h","app":"WEB","ipAddr":"10.0.0.9",
        "status":"UP","port":{"$":8081,"@enabled":"true"},"vipAddress":"web"}}"#;
    assert_eq!(
        call(Method::POST, &format!("{base}/apps/WEB"), body).await,
        204
    );
    assert_eq!(
        call(Method::PUT, &format!("{base}/apps/WEB/h:web:1"), "").await,
        200
    );
    assert_eq!(
        call(Method::PUT, &format!("{base}/apps/WEB/nope"), "").await,
        404
    );
    let url = format!("{base}/apps/WEB/h:web:1/status?value=OUT_OF_SERVICE");
    assert_eq!(call(Method::PUT, &url, "").await, 200);
    let (_, one) = get(&format!("{base}/apps/WEB")).await;
    let inst = &one["application"]["instance"][0];
    assert_eq!(inst["status"], "OUT_OF_SERVICE");
    assert_eq!(inst["overriddenStatus"], "OUT_OF_SERVICE");
    let url = format!("{base}/apps/WEB/h:web:1/status?value=UP");
    assert_eq!(call(Method::DELETE, &url, "").await, 200);
    let url = format!("{base}/apps/WEB/h:web:1/metadata?version=v2");
    assert_eq!(call(Method::PUT, &url, "").await, 200);
    let (_, one) = get(&format!("{base}/apps/WEB")).await;
    let inst = &one["application"]["instance"][0];
    assert_eq!(
        (&inst["status"], &inst["overriddenStatus"]),
        (&json!("UP"), &json!("UNKNOWN"))
    );
    assert_eq!(inst["metadata"]["version"], "v2");
    assert_eq!(
        call(Method::DELETE, &format!("{base}/apps/WEB/h:web:1"), "").await,
        200
    );
    assert_eq!(
        call(Method::DELETE, &format!("{base}/apps/WEB/h:web:1"), "").await,
        404
    );
    let (_, delta) = get(&format!("{base}/apps/delta")).await;
    let actions: Vec<&str> = delta["applications"]["application"][0]["instance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["actionType"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    );
    assert_eq!(delta["applications"]["apps__hashcode"], "");
    assert_eq!(
        call(Method::POST, &format!("{base}/apps/WEB"), "{}").await,
        400
    );
}

#[test]
fn registration_bodies_parse() {
    let body = json!({"instance": {"instanceId": "h:web:1", "hostName": "h", "app": "WEB",
        "ipAddr": "10.0.0.9", "status": "STARTING", "port": {"$": "8081", "@enabled": "true"},
        "securePort": {"$": 8443, "@enabled": "false"}, "vipAddress": "web,web-v2",
        "metadata": {"@class": "java.util.Collections$EmptyMap"}}});
    let i = render::parse_instance("web", &body).unwrap();
    assert_eq!(
        (
            i.app.as_str(),
            i.instance_id.as_str(),
            i.port,
            i.status.as_str()
        ),
        ("WEB", "h:web:1", 8081, "STARTING")
    );
    assert!(i.metadata.is_empty() && !i.secure_port_enabled);
    assert!(render::parse_instance("web", &json!({"x": 1})).is_err());
}
