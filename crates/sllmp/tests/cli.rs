//! The `sllmp` binary: serves the built-in configuration with no key, checks files, stops on
//! SIGTERM.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sllmp_test_support::{Frame, MockUpstream, Reply};

const SLLMP: &str = env!("CARGO_BIN_EXE_sllmp");

/// A minimal HTTP/1.1 exchange, enough to see the binary answer.
fn http(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

#[test]
fn serves_the_built_in_config_and_stops_on_sigterm() {
    let (mut child, addr) = start_sllmp(&[]);

    let body = r#"{"model":"mock:echo","messages":[{"role":"user","content":"Hello!"}]}"#;
    let response = http(
        &addr,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""content":"Hello!""#), "{response}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("sllmp exits");
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn check_reports_every_problem_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("sllmp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "defaults: {}\nfeatures:\n  chat:\n    modle: x\n    model: gpt-4\n",
    )
    .unwrap();
    let output = Command::new(SLLMP)
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .expect("run sllmp check");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let name = file.display().to_string();
    assert_eq!(
        stderr,
        format!(
            "{name}: features.chat.model: \"gpt-4\" is not written as provider:model; write it as e.g. \"openai:gpt-4\"\n\
             {name}: features.chat.modle: unknown key; expected one of: description, owner, model, provider_api_keys, providers, budget_constraints, langfuse, retry, timeouts, fallbacks, custom (did you mean \"model\"?)\n"
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unusable_proxy_variable_is_named_and_exits_2() {
    let output = Command::new(SLLMP)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HTTPS_PROXY", "socks5://me:hunter22@proxy.internal:1080")
        .env_remove("https_proxy")
        .env_remove("SLLMP_CONFIG")
        .output()
        .expect("run sllmp serve");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "HTTPS_PROXY: `socks5://proxy.internal:1080` is not a usable proxy: only http:// proxies are supported \
         (HTTPS upstreams still get TLS end to end, through a CONNECT tunnel); correct the variable or unset it\n"
    );
}

/// Starts `sllmp serve` with `args` and returns the child and its address, from the ready line.
fn start_sllmp(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(SLLMP)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .env_remove("SLLMP_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sllmp");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the ready line");
    let addr = line
        .strip_prefix("sllmp listening on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    (child, addr)
}

/// SIGTERM with 100 streams open: every stream is answered to its `data: [DONE]`, new
/// connections are refused, and every request's completion (its log line) is written
/// before the process exits.
#[test]
fn sigterm_lets_100_open_streams_finish_and_records_every_completion() {
    const STREAMS: usize = 100;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let upstream = runtime.block_on(MockUpstream::start());
    for _ in 0..STREAMS {
        let chunk = |text: &str| {
            Frame::data(json!({
                "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]
            }))
        };
        upstream.enqueue(Reply::sse(vec![
            chunk("one"),
            chunk(" two").after(Duration::from_millis(600)),
            Frame::data(json!({
                "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
            }))
            .after(Duration::from_millis(300)),
            Frame::done(),
        ]));
    }
    let dir = std::env::temp_dir().join(format!("sllmp-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "defaults:\n  providers:\n    up: {{provider: openai, api_base: \"{}\"}}\nfeatures:\n  default: {{model: \"up:gpt-4o\"}}\n",
            upstream.base_url()
        ),
    )
    .unwrap();
    let log = dir.join("sllmp.log");
    let (mut child, addr) = start_sllmp(&[
        "--config",
        config.to_str().unwrap(),
        "--log-file",
        log.to_str().unwrap(),
    ]);
    let body = r#"{"model":"any:thing","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let clients: Vec<_> = (0..STREAMS)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                http(
                    &addr,
                    &format!(
                        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                )
            })
        })
        .collect();
    // Every stream is open (its request reached the upstream) before the signal.
    let started = Instant::now();
    while upstream.requests().len() < STREAMS {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "streams did not open"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        TcpStream::connect(&addr).is_err(),
        "new connections are refused once shutting down"
    );
    for client in clients {
        let response = client.join().unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("one"), "{response}");
        assert!(response.contains(" two"), "{response}");
        assert!(
            response.ends_with("data: [DONE]\r\n\r\n") || response.contains("data: [DONE]\n\n"),
            "{response}"
        );
    }
    let exit = child.wait().expect("sllmp exits");
    assert!(exit.success(), "{exit:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let completed: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("request completed"))
        .collect();
    assert_eq!(completed.len(), STREAMS, "{text}");
    assert!(
        completed
            .iter()
            .all(|line| line.contains("outcome=\"success\"")
                && line.contains("stream=true")
                && line.contains("prompt_tokens=5")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
