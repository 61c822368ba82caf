//! The HTTP side: one thread per connection, one request per connection (`Connection: close`).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::Config;

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer with this status and body.
    Reply(u16, String),
    /// Answer, then exit the process with this code.
    Exit(i32),
}

/// Serves forever; a failed accept or connection is logged and skipped.
pub fn serve(listener: &TcpListener, config: &std::sync::Arc<Config>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let config = std::sync::Arc::clone(config);
                std::thread::spawn(move || {
                    if let Err(err) = handle(stream, &config) {
                        eprintln!("http: {err}");
                    }
                });
            }
            Err(err) => eprintln!("http accept: {err}"),
        }
    }
}

fn handle(mut stream: TcpStream, config: &Config) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; bodies are not used by any endpoint.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut words = request_line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let action = route(method, target, &config.name, peer);
    let (status, body) = match &action {
        Action::Reply(status, body) => (*status, body.clone()),
        Action::Exit(code) => (200, format!("exiting with code {code}\n")),
    };
    write!(
        stream,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )?;
    stream.flush()?;
    if let Action::Exit(code) = action {
        eprintln!("exit requested by {peer} with code {code}");
        std::process::exit(code);
    }
    Ok(())
}

/// Maps a request to its answer; pure, so it is tested without sockets.
pub fn route(method: &str, target: &str, name: &str, peer: SocketAddr) -> Action {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_owned())
    };
    if method != "GET" && !(method == "POST" && path == "/exit") {
        return Action::Reply(405, format!("method {method} not allowed\n"));
    }
    match path {
        "/" => Action::Reply(200, format!("{name} {peer}\n")),
        "/hostname" => Action::Reply(200, format!("{name}\n")),
        "/clientip" => Action::Reply(200, format!("{peer}\n")),
        "/healthz" => Action::Reply(200, "ok\n".to_owned()),
        "/echo" => Action::Reply(200, format!("{}\n", param("msg").unwrap_or_default())),
        "/exit" => match param("code").unwrap_or_else(|| "0".to_owned()).parse() {
            Ok(code) => Action::Exit(code),
            Err(_) => Action::Reply(400, "code must be an integer\n".to_owned()),
        },
        _ => Action::Reply(404, format!("no such path {path}\n")),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.7:40000".parse().unwrap()
    }

    #[test]
    fn root_names_the_server_and_the_client() {
        assert_eq!(
            route("GET", "/", "web-1", peer()),
            Action::Reply(200, "web-1 10.0.0.7:40000\n".into())
        );
        assert_eq!(
            route("GET", "/clientip", "web-1", peer()),
            Action::Reply(200, "10.0.0.7:40000\n".into())
        );
        assert_eq!(
            route("GET", "/echo?msg=hi", "w", peer()),
            Action::Reply(200, "hi\n".into())
        );
    }

    #[test]
    fn exit_takes_a_code_and_rejects_garbage() {
        assert_eq!(route("GET", "/exit?code=3", "w", peer()), Action::Exit(3));
        assert_eq!(route("POST", "/exit", "w", peer()), Action::Exit(0));
        assert!(matches!(
            route("GET", "/exit?code=x", "w", peer()),
            Action::Reply(400, _)
        ));
    }

    #[test]
    fn unknown_paths_and_methods_are_refused() {
        assert!(matches!(
            route("GET", "/nope", "w", peer()),
            Action::Reply(404, _)
        ));
        assert!(matches!(
            route("DELETE", "/", "w", peer()),
            Action::Reply(405, _)
        ));
    }
}
