//! The simulator's preview front and JSON API, with an in-test Phoenix client
//! playing the runner: HTTP (plain, streamed, errors) and WebSocket bridging.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use integration_tests::simulator::test_client::TestClient;
use integration_tests::simulator::{ERROR_CODE_HEADER, REQUEST_ID_HEADER, SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);
const TOPIC: &str = "runner:r1";

async fn setup(config: SimConfig) -> (Simulator, TestClient) {
    let sim = Simulator::start(config).await.expect("simulator starts");
    let mut runner = TestClient::connect(&sim.websocket_url())
        .await
        .expect("connects");
    runner
        .join(TOPIC, json!({"runnerId": "r1"}))
        .await
        .expect("joins");
    sim.wait_joined(WAIT).await.expect("joined");
    (sim, runner)
}

async fn control(runner: &mut TestClient) -> Value {
    runner
        .next_matching(|f| f.event == "control", WAIT)
        .await
        .expect("a control")
        .payload
}

/// Sends one request on a fresh connection, the way a browser would.
async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.expect("preview connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    sender.send_request(req).await.expect("response")
}

fn get(sim: &Simulator, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{}{path}", sim.preview_addr()))
        .header("host", sim.preview_addr().to_string())
        .body(Full::default())
        .unwrap()
}

async fn body_text(resp: Response<Incoming>) -> String {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8 body")
}

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

#[tokio::test]
async fn http_request_becomes_a_control_and_the_response_comes_back() {
    let (sim, mut runner) = setup(SimConfig::default()).await;
    let req = Request::post(format!(
        "http://{}/preview/8000/api/items?x=1&y=2",
        sim.preview_addr()
    ))
    .header("host", "kandan.test")
    .header("x-custom", "a")
    .header("x-custom", "b")
    .body(Full::new(Bytes::from_static(b"{\"name\":\"n\"}")))
    .unwrap();
    let addr = sim.preview_addr();
    let browser = tokio::spawn(async move { send(addr, req).await });

    let c = control(&mut runner).await;
    assert_eq!(c["type"], "forward_http_request");
    assert_eq!(c["port"], 8000);
    assert_eq!(c["method"], "POST");
    assert_eq!(c["path"], "/api/items");
    assert_eq!(c["queryString"], "x=1&y=2");
    assert_eq!(c["acceptStreaming"], true);
    assert_eq!(c["bodyBase64"], b64("{\"name\":\"n\"}"));
    let headers = c["headers"].as_array().unwrap();
    assert!(
        headers.contains(&json!(["x-custom", "a"])) && headers.contains(&json!(["x-custom", "b"]))
    );
    assert!(headers.contains(&json!(["host", "kandan.test"])));
    let request_id = c["requestId"].as_str().unwrap().to_owned();

    runner
        .push_event(TOPIC, json!({"type": "forward_http_response", "requestId": request_id, "status": 201,
            "headers": [["content-type", "application/json"], ["set-cookie", "a=1"], ["set-cookie", "b=2"],
                        ["content-length", "999"], ["transfer-encoding", "chunked"]],
            "bodyBase64": b64("{\"ok\":true}")}))
        .await
        .unwrap();
    let resp = browser.await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers().get_all("set-cookie").iter().count(), 2);
    assert_eq!(resp.headers()[REQUEST_ID_HEADER], request_id.as_str());
    assert_eq!(body_text(resp).await, "{\"ok\":true}");
}

#[tokio::test]
async fn streamed_response_arrives_chunk_by_chunk() {
    let (sim, mut runner) = setup(SimConfig::default()).await;
    let addr = sim.preview_addr();
    let req = get(&sim, "/preview/3000/events");
    let browser = tokio::spawn(async move { send(addr, req).await });
    let c = control(&mut runner).await;
    let id = c["requestId"].as_str().unwrap().to_owned();
    runner
        .push_event(TOPIC, json!({"type": "forward_http_response", "requestId": id, "status": 200,
            "headers": [["content-type", "text/event-stream"]], "bodyBase64": "", "streaming": true}))
        .await
        .unwrap();
    let resp = browser.await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    // Each chunk must reach the browser before the next one exists.
    for seq in 0..3 {
        let text = format!("data: {seq}\n\n");
        runner
            .push_event(
                TOPIC,
                json!({"type": "forward_http_response_chunk", "requestId": id,
                "seq": seq, "bodyBase64": b64(&text), "done": false}),
            )
            .await
            .unwrap();
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("chunk in time");
        let data = frame.unwrap().unwrap().into_data().unwrap();
        assert_eq!(data, Bytes::from(text));
    }
    runner
        .push_event(
            TOPIC,
            json!({"type": "forward_http_response_chunk", "requestId": id,
            "seq": 3, "bodyBase64": "", "done": true}),
        )
        .await
        .unwrap();
    let end = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("end in time");
    assert!(end.is_none(), "body ends after done: {end:?}");
}

#[tokio::test]
async fn control_errors_become_http_statuses() {
    let (sim, mut runner) = setup(SimConfig::default()).await;
    for (code, status) in [
        ("port_not_approved", 403),
        ("body_too_large", 413),
        ("port_not_listening", 404),
        ("upstream_unreachable", 502),
        ("upstream_timeout", 502),
    ] {
        let addr = sim.preview_addr();
        let req = get(&sim, "/preview/4000/");
        let browser = tokio::spawn(async move { send(addr, req).await });
        let c = control(&mut runner).await;
        runner
            .push_event(
                TOPIC,
                json!({"type": "control_error", "controlType": "forward_http_request",
                "requestId": c["requestId"], "code": code, "message": "nope"}),
            )
            .await
            .unwrap();
        let resp = browser.await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{code}");
        assert_eq!(resp.headers()[ERROR_CODE_HEADER], code);
        assert!(body_text(resp).await.contains(code));
    }
}

#[tokio::test]
async fn runner_gone_gives_503_and_mid_request_loss_gives_502() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let resp = send(sim.preview_addr(), get(&sim, "/preview/4000/")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[ERROR_CODE_HEADER], "runner_not_connected");

    let mut runner = TestClient::connect(&sim.websocket_url()).await.unwrap();
    runner.join(TOPIC, json!({})).await.unwrap();
    let addr = sim.preview_addr();
    let req = get(&sim, "/preview/4000/");
    let browser = tokio::spawn(async move { send(addr, req).await });
    control(&mut runner).await;
    sim.drop_connection().unwrap();
    let resp = browser.await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn prefix_is_kept_when_configured_and_bare_port_redirects() {
    let (sim, mut runner) = setup(SimConfig {
        keep_preview_prefix: true,
        ..SimConfig::default()
    })
    .await;
    let resp = send(sim.preview_addr(), get(&sim, "/preview/5173?a=b")).await;
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()["location"], "/preview/5173/?a=b");

    let addr = sim.preview_addr();
    let req = get(&sim, "/preview/5173/src/main.ts");
    let browser = tokio::spawn(async move { send(addr, req).await });
    let c = control(&mut runner).await;
    assert_eq!(c["path"], "/preview/5173/src/main.ts");
    runner
        .push_event(
            TOPIC,
            json!({"type": "forward_http_response", "requestId": c["requestId"],
            "status": 200, "headers": [], "bodyBase64": ""}),
        )
        .await
        .unwrap();
    assert_eq!(browser.await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn websocket_is_bridged_both_ways_with_its_subprotocol() {
    let (sim, mut runner) = setup(SimConfig::default()).await;
    let mut req = format!("ws://{}/preview/5173/hmr?token=t", sim.preview_addr())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "vite-hmr".parse().unwrap());
    let browser = tokio::spawn(tokio_tungstenite::connect_async(req));

    let open = control(&mut runner).await;
    assert_eq!(open["type"], "forward_websocket_open");
    assert_eq!(
        (open["port"].as_u64(), open["path"].as_str()),
        (Some(5173), Some("/hmr"))
    );
    assert_eq!(open["queryString"], "token=t");
    assert!(
        open["headers"]
            .as_array()
            .unwrap()
            .contains(&json!(["sec-websocket-protocol", "vite-hmr"]))
    );
    let socket_id = open["socketId"].clone();
    runner
        .push_event(TOPIC, json!({"type": "forward_websocket_opened", "socketId": socket_id, "protocol": "vite-hmr"}))
        .await
        .unwrap();
    let (mut ws, resp) = browser.await.unwrap().expect("browser handshake");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "vite-hmr");

    ws.send(Message::text("hello")).await.unwrap();
    let send = control(&mut runner).await;
    assert_eq!(send["type"], "forward_websocket_send");
    assert_eq!(
        (send["socketId"].clone(), send["opcode"].as_str()),
        (socket_id.clone(), Some("text"))
    );
    assert_eq!(send["bodyBase64"], b64("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    let send = control(&mut runner).await;
    assert_eq!(
        (send["opcode"].as_str(), send["bodyBase64"].as_str()),
        (Some("binary"), Some("AAEC"))
    );

    runner
        .push_event(
            TOPIC,
            json!({"type": "forward_websocket_message", "socketId": socket_id,
            "opcode": "text", "bodyBase64": b64("{\"type\":\"connected\"}")}),
        )
        .await
        .unwrap();
    let msg = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg, Message::text("{\"type\":\"connected\"}"));

    runner
        .push_event(TOPIC, json!({"type": "forward_websocket_closed", "socketId": socket_id, "code": 4001, "reason": "bye"}))
        .await
        .unwrap();
    let msg = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Close(Some(frame)) = msg else {
        panic!("expected a close, got {msg:?}")
    };
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4001, "bye")
    );
}

#[tokio::test]
async fn browser_close_becomes_forward_websocket_close() {
    let (sim, mut runner) = setup(SimConfig::default()).await;
    let url = format!("ws://{}/preview/8080/ws", sim.preview_addr());
    let browser = tokio::spawn(tokio_tungstenite::connect_async(url));
    let open = control(&mut runner).await;
    runner
        .push_event(
            TOPIC,
            json!({"type": "forward_websocket_opened", "socketId": open["socketId"]}),
        )
        .await
        .unwrap();
    let (mut ws, resp) = browser.await.unwrap().expect("browser handshake");
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    ws.close(None).await.unwrap();
    let close = control(&mut runner).await;
    assert_eq!(close["type"], "forward_websocket_close");
    assert_eq!(close["socketId"], open["socketId"]);
}

#[tokio::test]
async fn websocket_open_fails_on_control_error_or_closed() {
    let (sim, mut runner) = setup(SimConfig::default()).await;
    for (event, status) in [
        (
            json!({"type": "control_error", "controlType": "forward_websocket_open", "code": "port_not_approved", "message": "no"}),
            403,
        ),
        (
            json!({"type": "forward_websocket_closed", "error": "connection refused"}),
            502,
        ),
    ] {
        let url = format!("ws://{}/preview/8080/ws", sim.preview_addr());
        let browser = tokio::spawn(tokio_tungstenite::connect_async(url));
        let open = control(&mut runner).await;
        let mut event = event;
        event["socketId"] = open["socketId"].clone();
        runner.push_event(TOPIC, event).await.unwrap();
        let err = browser.await.unwrap().expect_err("handshake fails");
        let tokio_tungstenite::tungstenite::Error::Http(resp) = err else {
            panic!("{err}")
        };
        assert_eq!(resp.status().as_u16(), status);
    }
}

#[tokio::test]
async fn json_api_lists_and_resolves_requests_and_events() {
    let (sim, mut runner) = setup(SimConfig::default()).await;
    runner
        .push_event(
            TOPIC,
            json!({"type": "port_forward_request", "requestId": "p1", "port": 5173}),
        )
        .await
        .unwrap();
    sim.wait_for_request(5173, WAIT).await.unwrap();
    let list: Value = serde_json::from_str(
        &body_text(send(sim.preview_addr(), get(&sim, "/api/requests")).await).await,
    )
    .unwrap();
    assert_eq!(list[0]["requestId"], "p1");
    assert_eq!(list[0]["state"], "pending");

    let approve = Request::post(format!(
        "http://{}/api/requests/p1/approve",
        sim.preview_addr()
    ))
    .body(Full::default())
    .unwrap();
    assert_eq!(
        send(sim.preview_addr(), approve).await.status(),
        StatusCode::OK
    );
    let c = control(&mut runner).await;
    assert_eq!(
        (c["requestId"].as_str(), c["decision"].as_str()),
        (Some("p1"), Some("approve"))
    );
    assert_eq!(
        sim.port_forward_requests()[0].state,
        integration_tests::simulator::RequestState::Approved
    );

    let events: Value = serde_json::from_str(
        &body_text(send(sim.preview_addr(), get(&sim, "/api/events")).await).await,
    )
    .unwrap();
    assert_eq!(events[0]["type"], "port_forward_request");

    let ctl = Request::post(format!("http://{}/api/controls", sim.preview_addr()))
        .body(Full::new(Bytes::from_static(
            b"{\"type\":\"stop_instance\",\"instanceId\":\"i\"}",
        )))
        .unwrap();
    assert_eq!(send(sim.preview_addr(), ctl).await.status(), StatusCode::OK);
    assert_eq!(control(&mut runner).await["type"], "stop_instance");
}

#[tokio::test]
async fn bodies_over_sixteen_mib_pass_both_ways() {
    let (sim, mut runner) = setup(SimConfig::default()).await;
    let big: Vec<u8> = (0..17 << 20).map(|i| (i % 251) as u8).collect();
    let req = Request::put(format!("http://{}/preview/8000/upload", sim.preview_addr()))
        .body(Full::new(Bytes::from(big.clone())))
        .unwrap();
    let addr = sim.preview_addr();
    let browser = tokio::spawn(async move { send(addr, req).await });
    let c = control(&mut runner).await;
    assert_eq!(
        STANDARD.decode(c["bodyBase64"].as_str().unwrap()).unwrap(),
        big
    );
    runner
        .push_event(
            TOPIC,
            json!({"type": "forward_http_response", "requestId": c["requestId"],
            "status": 200, "headers": [], "bodyBase64": STANDARD.encode(&big)}),
        )
        .await
        .unwrap();
    let resp = browser.await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body == big, "body differs ({} bytes)", body.len());
    assert!(sim.connected());
}

/// Each port on its own origin (`p<port>.localhost`): the whole path and
/// query go to the port as they are (`/api/` too, which is the app's there),
/// and so do WebSocket upgrades; other hosts keep the usual routes.
#[tokio::test]
async fn a_port_origin_forwards_paths_as_they_are_and_websockets_too() {
    let (sim, mut runner) = setup(SimConfig::default()).await;
    let front = sim.preview_addr().port();
    assert_eq!(
        sim.port_origin_url(5173),
        format!("http://p5173.localhost:{front}/")
    );
    let addr = sim.preview_addr();
    for (host, path, port) in [
        (
            format!("p5173.localhost:{front}"),
            "/@vite/client?t=1",
            5173,
        ),
        (format!("P8000.LOCALHOST:{front}"), "/api/items", 8000),
        ("p3000.localhost".to_owned(), "/src/main.js", 3000),
    ] {
        let req = Request::get(format!("http://{addr}{path}"))
            .header("host", host.as_str())
            .body(Full::default())
            .unwrap();
        let browser = tokio::spawn(async move { send(addr, req).await });
        let c = control(&mut runner).await;
        assert_eq!(c["type"], "forward_http_request", "{host}");
        assert_eq!(c["port"], port, "{host}");
        let (want_path, want_query) = path.split_once('?').unwrap_or((path, ""));
        assert_eq!(c["path"], want_path, "{host}");
        if want_query.is_empty() {
            assert!(c["queryString"].is_null(), "{c}");
        } else {
            assert_eq!(c["queryString"], want_query);
        }
        runner
            .push_event(
                TOPIC,
                json!({"type": "forward_http_response", "requestId": c["requestId"],
                "status": 200, "headers": [], "bodyBase64": b64("ok")}),
            )
            .await
            .unwrap();
        let resp = browser.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body_text(resp).await, "ok");
    }

    // Not a port origin: the front's own routes answer (no control).
    for host in [
        format!("x5173.localhost:{front}"),
        format!("p.localhost:{front}"),
        format!("p0.localhost:{front}"),
    ] {
        let req = Request::get(format!("http://{addr}/src/main.js"))
            .header("host", host.as_str())
            .body(Full::default())
            .unwrap();
        let resp = send(addr, req).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{host}");
        assert_eq!(resp.headers()[ERROR_CODE_HEADER], "not_found", "{host}");
    }

    // Vite's HMR socket on the origin's root.
    let mut req = format!("ws://{addr}/?token=t")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("host", format!("p5173.localhost:{front}").parse().unwrap());
    let browser = tokio::spawn(tokio_tungstenite::connect_async(req));
    let open = control(&mut runner).await;
    assert_eq!(open["type"], "forward_websocket_open");
    assert_eq!(
        (open["port"].as_u64(), open["path"].as_str()),
        (Some(5173), Some("/"))
    );
    assert_eq!(open["queryString"], "token=t");
    runner
        .push_event(
            TOPIC,
            json!({"type": "forward_websocket_opened", "socketId": open["socketId"]}),
        )
        .await
        .unwrap();
    browser.await.unwrap().expect("browser handshake");
}
