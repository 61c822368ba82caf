//! The UDP side: every datagram gets one answer, sent back to its source.

use std::net::{SocketAddr, UdpSocket};

use crate::Config;

/// Serves forever; a failed receive or send is logged and skipped.
pub fn serve(socket: &UdpSocket, config: &Config) {
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let answer = answer(&String::from_utf8_lossy(&buf[..n]), &config.name, peer);
                if let Err(err) = socket.send_to(answer.as_bytes(), peer) {
                    eprintln!("udp send to {peer}: {err}");
                }
            }
            Err(err) => eprintln!("udp receive: {err}"),
        }
    }
}

/// The answer to one datagram; pure, so it is tested without sockets.
pub fn answer(request: &str, name: &str, peer: SocketAddr) -> String {
    let request = request.trim_end();
    match request {
        "hostname" => name.to_owned(),
        "clientip" => peer.to_string(),
        _ => match request.strip_prefix("echo ") {
            Some(text) => text.to_owned(),
            None => format!("{name} {peer}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_the_default_answer() {
        let peer: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        assert_eq!(answer("hostname\n", "web-1", peer), "web-1");
        assert_eq!(answer("clientip", "web-1", peer), "10.0.0.7:5000");
        assert_eq!(answer("echo hello there", "web-1", peer), "hello there");
        assert_eq!(answer("anything", "web-1", peer), "web-1 10.0.0.7:5000");
    }
}
