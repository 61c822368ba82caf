//! Just enough of the DNS wire format to ask for an A record and read the answer: the bench
//! checks every server's answers and polls for new names without a resolver in between.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use skiff_tests::Netns;

use super::{addresses, fqdn};

/// Asks `server` for every Service in `services` once; fails at the first answer that is not
/// exactly the Service's addresses.
pub(super) fn check_answers(node: &Netns, server: SocketAddr, services: &[usize]) -> Result<()> {
    let services = services.to_vec();
    node.run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        for (n, &i) in services.iter().enumerate() {
            let (rcode, mut got) = ask(&socket, server, &fqdn(i), n as u16)?;
            got.sort();
            ensure!(
                rcode == 0 && got == addresses(i),
                "{} answered rcode {rcode} {got:?}, want {:?}",
                fqdn(i),
                addresses(i)
            );
        }
        Ok(())
    })
}

/// One A question for `name` to `server` and its answer's rcode and addresses; fails when no
/// answer with this `id` comes within the socket's read timeout.
pub(super) fn ask(
    socket: &UdpSocket,
    server: SocketAddr,
    name: &str,
    id: u16,
) -> Result<(u8, Vec<Ipv4Addr>)> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend(label.as_bytes());
    }
    query.extend([0, 0, 1, 0, 1]);
    socket.send_to(&query, server)?;
    let mut buf = [0u8; 1500];
    loop {
        let len = socket
            .recv(&mut buf)
            .with_context(|| format!("no answer from {server} for {name}"))?;
        // A late answer to an earlier question is skipped.
        if len >= 2 && buf[..2] == id.to_be_bytes() {
            return parse_answer(&buf[..len]);
        }
    }
}

/// The rcode and A records of a DNS answer.
fn parse_answer(packet: &[u8]) -> Result<(u8, Vec<Ipv4Addr>)> {
    let u16_at = |pos: usize| -> Result<u16> {
        let b = packet.get(pos..pos + 2).context("a short answer")?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    };
    let rcode = packet.get(3).context("a short answer")? & 0x0f;
    let (questions, answers) = (u16_at(4)?, u16_at(6)?);
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(packet, pos)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        pos = skip_name(packet, pos)?;
        let (rtype, len) = (u16_at(pos)?, usize::from(u16_at(pos + 8)?));
        pos += 10;
        let data = packet.get(pos..pos + len).context("a short record")?;
        if rtype == 1 && len == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        pos += len;
    }
    Ok((rcode, addresses))
}

/// Where the name at `pos` ends.
fn skip_name(packet: &[u8], mut pos: usize) -> Result<usize> {
    loop {
        let len = *packet.get(pos).context("a short name")?;
        match len {
            0 => return Ok(pos + 1),
            l if l & 0xc0 == 0xc0 => return Ok(pos + 2),
            l => pos += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `a.b A` with two A records, the second owner a compression pointer.
    fn two_addresses() -> Vec<u8> {
        let mut packet = vec![0, 7, 0x84, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        packet.extend([1, b'a', 1, b'b', 0, 0, 1, 0, 1]);
        packet.extend([
            1, b'a', 1, b'b', 0, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 97, 0, 1,
        ]);
        packet.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 97, 0, 2]);
        packet
    }

    #[test]
    fn reads_the_addresses_of_an_answer() {
        let (rcode, addresses) = parse_answer(&two_addresses()).unwrap();
        assert_eq!(rcode, 0);
        assert_eq!(
            addresses,
            [Ipv4Addr::new(10, 97, 0, 1), Ipv4Addr::new(10, 97, 0, 2)]
        );
    }

    #[test]
    fn a_cut_answer_is_an_error() {
        let packet = two_addresses();
        assert!(parse_answer(&packet[..packet.len() - 2]).is_err());
    }

    #[test]
    fn reads_the_rcode() {
        let mut packet = two_addresses();
        packet[3] = 3;
        packet[7] = 0;
        assert_eq!(parse_answer(&packet).unwrap(), (3, vec![]));
    }
}
